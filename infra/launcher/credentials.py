"""The stack's secrets: a MinIO key and an MLflow password per user, MLflow's own keys, each made once per
stack and kept owner-only under ``.stack/``; and each user's login as the environment a process reads."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

from .paths import STACK
from .ports import HOST, MINIO_PORT


def stack_secrets(file: str, users: list[str]) -> dict[str, str]:
    """A secret per user, made once per stack and kept in ``.stack/<file>`` (owner-only)."""
    from flywheel.common.storeaccess import new_secrets

    path = STACK / file
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_owner_only(path, json.dumps(new_secrets(users)))
    return json.loads(path.read_text())


def write_owner_only(path: Path, text: str) -> None:
    """Write a secret to a new file that is owner-only from its first byte (not chmod-ed after the write)."""
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as file:
        file.write(text)


def store_keys() -> dict[str, str]:
    """Each MinIO user's secret key (a user per service, and MLflow's)."""
    from flywheel.common.storeaccess import USERS

    return stack_secrets("minio-users.json", list(USERS))


def tracking_passwords() -> dict[str, str]:
    """Each MLflow user's password: the admin's, and one per service that uses MLflow."""
    from flywheel.common.trackingaccess import ADMIN, USERS

    return stack_secrets("mlflow-users.json", [ADMIN, *USERS])


def kafka_passwords() -> dict[str, str]:
    """Each Kafka principal's password: the admin's, one per service, the outside clients' and the operators'."""
    from flywheel.common.kafkaaccess import ADMIN, USERS

    return stack_secrets("kafka-users.json", [ADMIN, *USERS])


def kafka_env(user: str) -> dict[str, str]:
    """A principal's Kafka login, as every Flywheel client reads it (flywheel.common.kafka.client_security)."""
    return {"FLYWHEEL_KAFKA_USERNAME": user, "FLYWHEEL_KAFKA_PASSWORD": kafka_passwords()[user]}


def admin_logins() -> dict[str, str]:
    """The stack's admin logins to Kafka and MLflow, as the environment Flywheel's clients and MLflow's read:
    for the demo, the tests and an operator's commands (``python infra/stack.py run -- ...``)."""
    from flywheel.common.kafkaaccess import ADMIN as KAFKA_ADMIN
    from flywheel.common.trackingaccess import ADMIN as TRACKING_ADMIN

    password = tracking_passwords()[TRACKING_ADMIN]
    return {
        **kafka_env(KAFKA_ADMIN),
        **{f"{p}_USERNAME": TRACKING_ADMIN for p in ("FLYWHEEL_MLFLOW", "MLFLOW_TRACKING")},
        **{f"{p}_PASSWORD": password for p in ("FLYWHEEL_MLFLOW", "MLFLOW_TRACKING")},
    }


# A login in the caller's environment (a test runs as MLflow's admin) is never passed on: each service
# gets its own from tracking_env, and one that uses no MLflow gets none.
LOGIN_VARIABLES = {
    f"{p}_{v}" for p in ("FLYWHEEL_MLFLOW", "MLFLOW_TRACKING", "FLYWHEEL_KAFKA") for v in ("USERNAME", "PASSWORD")
}


def inherited_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in LOGIN_VARIABLES}


def tracking_env(user: str) -> dict[str, str]:
    """A service's MLflow login, as the services read it; nothing for one that uses no MLflow."""
    password = tracking_passwords().get(user)
    return {} if password is None else {"FLYWHEEL_MLFLOW_USERNAME": user, "FLYWHEEL_MLFLOW_PASSWORD": password}


def store_env(user: str) -> dict[str, str]:
    """A user's MinIO key, as the services read it, and as MLflow (boto3) does."""
    secret = store_keys()[user]
    return {
        "FLYWHEEL_S3_ACCESS_KEY": user,
        "FLYWHEEL_S3_SECRET_KEY": secret,
        "MLFLOW_S3_ENDPOINT_URL": f"http://{HOST}:{MINIO_PORT}",
        "AWS_ACCESS_KEY_ID": user,
        "AWS_SECRET_ACCESS_KEY": secret,
    }


def stack_key(file: str) -> str:
    """A random 32-byte key (urlsafe base64), made once per stack and kept in ``.stack/<file>`` (owner-only)."""
    path = STACK / file
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_owner_only(path, base64.urlsafe_b64encode(os.urandom(32)).decode())
    return path.read_text().strip()


def webhook_encryption_key() -> str:
    """The Fernet key MLflow encrypts webhook secrets with: MLflow's default is a new random key per
    process, and a restarted MLflow could then no longer sign a delivery."""
    return stack_key("mlflow-webhook.key")


def registry_webhook_secret() -> str:
    """The HMAC secret MLflow signs webhook deliveries with: one for every registry replica, since each sets it
    in MLflow as it starts (a random one each, and every replica but the last would refuse every delivery)."""
    return stack_key("registry-webhook.key")


def registry_command_secret() -> str:
    """The HMAC secret registry replicas sign their commands with: one for all, so any replica may carry out
    another's, and no one else's (Kafka is open to the stack's network)."""
    return stack_key("registry-command.key")


def mlflow_flask_key() -> str:
    """The key MLflow's basic-auth app signs its CSRF tokens with (it refuses to start without one)."""
    return stack_key("mlflow-flask.key")
