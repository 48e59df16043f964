"""MLflow: the tracking server from the project's virtualenv, SQLite for its metadata, artifacts proxied to
MinIO, a basic-auth login per service, and the webhooks the registry listens to."""

from __future__ import annotations

from .component import Component, http_ok
from .credentials import mlflow_flask_key, store_env, tracking_passwords, webhook_encryption_key
from .paths import STACK, VENV_BIN
from .plan import SHARED_ENV
from .ports import HOST, MLFLOW_PORT

MLFLOW_DATA = STACK / "data" / "mlflow"
MLFLOW_AUTH_CONFIG = MLFLOW_DATA / "auth.ini"

MLFLOW_WEBHOOKS = {
    # the registry listens on plain http at a loopback (or Docker network) address, which MLflow refuses unless told
    "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
    "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
    "MLFLOW_WEBHOOK_CACHE_TTL": "2",  # a webhook created or disabled is obeyed within seconds, not a minute
}


def prepare_mlflow() -> None:
    """The basic-auth app's configuration, its user store beside MLflow's own database."""
    from flywheel.common.trackingaccess import auth_config

    MLFLOW_AUTH_CONFIG.parent.mkdir(parents=True, exist_ok=True)
    MLFLOW_AUTH_CONFIG.write_text(auth_config(f"sqlite:///{MLFLOW_AUTH_CONFIG.parent / 'auth.db'}"))


def provision_mlflow() -> None:
    """A MLflow user per service that uses MLflow (flywheel.common.trackingaccess)."""
    from flywheel.common.trackingaccess import ADMIN, provision

    passwords = tracking_passwords()
    provision(f"http://{HOST}:{MLFLOW_PORT}", passwords[ADMIN], passwords)


def mlflow_component() -> Component:
    from flywheel.common.trackingaccess import ADMIN

    return Component(
        "mlflow",
        MLFLOW_PORT,
        lambda: [
            str(VENV_BIN / "mlflow"),
            "server",
            "--host",
            HOST,
            "--port",
            str(MLFLOW_PORT),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{MLFLOW_DATA / 'mlflow.db'}",
            "--artifacts-destination",
            "s3://mlflow",
            "--serve-artifacts",
            "--app-name",
            "basic-auth",
        ],
        http_ok(f"http://{HOST}:{MLFLOW_PORT}/health"),
        120,
        f"http://{HOST}:{MLFLOW_PORT}",
        # MLflow 3 otherwise starts seven huey job consumers (GenAI jobs, ~1.7 GB) Flywheel never uses.
        env={
            **SHARED_ENV,
            **store_env("mlflow"),
            **MLFLOW_WEBHOOKS,
            "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": webhook_encryption_key(),
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            "MLFLOW_AUTH_CONFIG_PATH": str(MLFLOW_AUTH_CONFIG),
            "MLFLOW_AUTH_ADMIN_PASSWORD": tracking_passwords()[ADMIN],
            "MLFLOW_FLASK_SERVER_SECRET_KEY": mlflow_flask_key(),
        },
        prepare=prepare_mlflow,
        after_start=provision_mlflow,
        infra=True,
    )
