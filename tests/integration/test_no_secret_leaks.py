"""No configured secret shows where anyone may look: a service's /health, /metrics, OpenAPI and
AsyncAPI documents, or any log the stack wrote so far in this run (every component's, every test's
extra replica's).

The secrets are the stack's own: MinIO's root key and each service's, MLflow's webhook encryption key, and the tokens
the services accept (the dev ones, in a dev stack). A secret is looked for as it is and
base64-encoded.
"""

from __future__ import annotations

import base64

import httpx

from flywheel.common.auth import DEV_PRODUCER_TOKEN, DEV_TOKEN
from infra import stack as launcher
from tests.support.stack import component

DOCUMENTS = ("/health", "/metrics", "/openapi.json", "/asyncapi.json")


def configured_secrets() -> dict[str, str]:
    return {
        "MinIO root secret key": launcher.MINIO_PASSWORD,
        **{f"{user}'s MinIO secret key": secret for user, secret in launcher.store_keys().items()},
        "MLflow webhook encryption key": launcher.webhook_encryption_key(),
        "dev operator token": DEV_TOKEN,
        "dev producer token": DEV_PRODUCER_TOKEN,
    }


def forms(secret: str) -> list[str]:
    return [secret, base64.b64encode(secret.encode()).decode()]


def test_no_configured_secret_is_in_any_health_metrics_document_or_log(services):
    secrets = configured_secrets()
    places: dict[str, str] = {}
    for name, base in services.items():
        for path in DOCUMENTS:
            places[f"{name} {path}"] = httpx.get(f"{base}{path}", timeout=30).text
    logs = sorted(component("kafka").log_file.parent.glob("*.log"))
    assert len(logs) >= 9, f"the stack's logs are not where the launcher writes them: {logs}"
    for log in logs:
        places[f"log {log.name}"] = log.read_text(errors="replace")
    leaks = [
        f"{what} in {where}"
        for what, secret in secrets.items()
        for where, text in places.items()
        if any(form in text for form in forms(secret))
    ]
    assert not leaks, leaks
    print(f"\n{len(secrets)} secrets looked for in {len(places)} places: 0 found")
