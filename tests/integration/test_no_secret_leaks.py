"""No configured secret shows where anyone may look: a service's /health, /metrics, OpenAPI and
AsyncAPI documents, any log the stack wrote so far in this run (every component's, every test's
extra replica's), or any event on any topic (every error a dead letter carries among them).

The secrets are the stack's own: MinIO's root key and each service's, each MLflow user's and each Kafka principal's
password, MLflow's webhook encryption key, and the tokens
the services accept (the dev ones, in a dev stack). A secret is looked for as it is and
base64-encoded.

An access log's request target is left out: it is what a client asked for, not what the stack disclosed. The
API fuzzing (``test_api_fuzz``) sends strings Hypothesis draws from the project's own constants, the dev
secrets among them, and a model named after one shows up in MLflow's access log as the registry looks it up.
"""

from __future__ import annotations

import base64
import re
import time

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition

from flywheel.common.auth import DEV_PRODUCER_TOKEN, DEV_SERVING_TOKEN, DEV_TOKEN
from flywheel.common.kafka import client_security
from flywheel.common.settings import KafkaSettings
from flywheel.schemas import TOPICS
from infra.launcher.credentials import (
    kafka_passwords,
    mlflow_flask_key,
    registry_command_secret,
    registry_webhook_secret,
    store_keys,
    tracking_passwords,
    webhook_encryption_key,
)
from infra.launcher.minio import MINIO_PASSWORD
from tests.support.stack import component

DOCUMENTS = ("/health", "/metrics", "/openapi.json", "/asyncapi.json")
REQUEST_LINE = re.compile(r'"([A-Z]+) \S+ (HTTP/[0-9.]+)"')  # uvicorn's and MLflow's access logs


def configured_secrets() -> dict[str, str]:
    return {
        "MinIO root secret key": MINIO_PASSWORD,
        **{f"{user}'s MinIO secret key": secret for user, secret in store_keys().items()},
        "MLflow webhook encryption key": webhook_encryption_key(),
        "MLflow's CSRF signing key": mlflow_flask_key(),
        "the registry's webhook secret": registry_webhook_secret(),
        "the registry's command secret": registry_command_secret(),
        **{f"{user}'s MLflow password": password for user, password in tracking_passwords().items()},
        **{f"Kafka principal {user}'s password": password for user, password in kafka_passwords().items()},
        "dev operator token": DEV_TOKEN,
        "dev producer token": DEV_PRODUCER_TOKEN,
        "dev serving token": DEV_SERVING_TOKEN,
    }


async def every_event(bootstrap: str, budget_s: float = 120.0) -> dict[str, bytes]:
    """Every message on every catalogue topic so far, by topic (values and headers, as bytes)."""
    consumer = AIOKafkaConsumer(**client_security(), bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()  # every topic's partitions (as TopicReader does)
        partitions = [
            TopicPartition(topic, p) for topic in TOPICS for p in sorted(consumer.partitions_for_topic(topic) or [])
        ]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        texts: dict[str, list[bytes]] = {topic: [] for topic in TOPICS}
        deadline = time.monotonic() + budget_s
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            assert time.monotonic() < deadline, f"the topics were not read in {budget_s} s"
            for tp, records in (await consumer.getmany(timeout_ms=500, max_records=10_000)).items():
                for record in records:
                    headers = b"".join(value or b"" for _, value in record.headers or ())
                    texts[tp.topic].append((record.value or b"") + (record.key or b"") + headers)
        return {topic: b"\n".join(found) for topic, found in texts.items()}
    finally:
        await consumer.stop()


def without_request_targets(log: str) -> str:
    """The log with each access line's request target left out (what a client sent).

    >>> without_request_targets('127.0.0.1:1 - "GET /models/get?name=x HTTP/1.1" 404 Not Found')
    '127.0.0.1:1 - "GET - HTTP/1.1" 404 Not Found'
    """
    return REQUEST_LINE.sub(r'"\1 - \2"', log)


def forms(secret: str) -> list[str]:
    return [secret, base64.b64encode(secret.encode()).decode()]


async def test_no_configured_secret_is_in_any_health_metrics_document_log_or_event(services):
    secrets = configured_secrets()
    places: dict[str, str] = {}
    for name, base in services.items():
        for path in DOCUMENTS:
            places[f"{name} {path}"] = httpx.get(f"{base}{path}", timeout=30).text
    logs = sorted(component("kafka").log_file.parent.glob("*.log"))
    assert len(logs) >= 9, f"the stack's logs are not where the launcher writes them: {logs}"
    for log in logs:
        places[f"log {log.name}"] = without_request_targets(log.read_text(errors="replace"))
    events = await every_event(KafkaSettings().bootstrap_servers)
    assert sum(len(text) for text in events.values()) > 0, "no event was read"
    for topic, text in events.items():
        places[f"topic {topic}"] = text.decode(errors="replace")
    leaks = [
        f"{what} in {where}"
        for what, secret in secrets.items()
        for where, text in places.items()
        if any(form in text for form in forms(secret))
    ]
    assert not leaks, leaks
    print(f"\n{len(secrets)} secrets looked for in {len(places)} places: 0 found")
