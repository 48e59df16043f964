"""The compose deployment's secrets: random, one per principal and per MinIO user, written once.

``python infra/docker/credentials.py [DIR]`` (``make compose-secrets``) writes, in ``DIR``
(``.secrets`` by default, mode 0700):

- ``credentials.json``: token → principal and roles, mounted into the services as the compose
  secret ``credentials`` (``FLYWHEEL_CREDENTIALS_FILE``);
- ``compose.env``, for ``docker compose --env-file``: the tokens by principal
  (``FLYWHEEL_SERVING_TOKEN``, ``FLYWHEEL_OPERATOR_TOKEN``, ``FLYWHEEL_PRODUCER_TOKEN``), MinIO's
  root password (``MINIO_ROOT_PASSWORD``) and each MinIO user's secret key
  (``FLYWHEEL_S3_<USER>_SECRET``: a user per service and MLflow's, ``flywheel.common.storeaccess``),
  each MLflow user's password (``FLYWHEEL_MLFLOW_<USER>_PASSWORD``, and the admin's,
  ``flywheel.common.trackingaccess``), MLflow's CSRF and webhook encryption keys, and the secret MLflow
  signs its webhook deliveries to the registry with (``REGISTRY_WEBHOOK_SECRET``: one for every registry
  replica, since any of them may receive a delivery), and the one registry replicas sign their commands with
  (``REGISTRY_COMMAND_SECRET``: any replica carries out another's), and each Kafka principal's password
  (``FLYWHEEL_KAFKA_<USER>_PASSWORD``: the admin's, a principal per service, the outside clients' and the
  operators', ``flywheel.common.kafkaaccess``);
- ``kafka-access.plan`` (owner-only): the Kafka logins and ACLs compose's one-shot ``kafka-access`` makes
  (``infra/kafka/Access.java``), written again on each run from the passwords and the topic graph.

Existing secrets are kept and missing ones added (rotating is deleting them and running this
again, then restarting).
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import sys
from pathlib import Path

from flywheel.common import kafkaaccess
from flywheel.common.storeaccess import USERS
from flywheel.common.topicroles import ROLES
from flywheel.common.trackingaccess import ADMIN, password_variable
from flywheel.common.trackingaccess import USERS as TRACKING_USERS

ROOT = Path(__file__).resolve().parents[2]
# principal → roles: serving promotes and rolls back through the registry; an operator runs the loop
# by hand (and may read every dataset); a producer only sends records.
PRINCIPALS = {"serving": ["operator"], "operator": ["operator", "producer"], "producer": ["producer"]}


def token_variable(principal: str) -> str:
    return f"FLYWHEEL_{principal.upper()}_TOKEN"


def store_variable(user: str) -> str:
    return f"FLYWHEEL_S3_{user.upper()}_SECRET"


def kafka_password_variable(user: str) -> str:
    return f"FLYWHEEL_KAFKA_{user.upper()}_PASSWORD"


def ensure(directory: Path) -> dict[str, str]:
    """Every secret by its compose variable, written to ``directory`` (those missing, the first time)."""
    credentials, env = directory / "credentials.json", directory / "compose.env"
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    lines = [line.strip() for line in (env.read_text().splitlines() if env.exists() else [])]
    pairs = [line.removeprefix("export ").split("=", 1) for line in lines if "=" in line and not line.startswith("#")]
    variables = {name.strip(): value.strip().strip("\"'") for name, value in pairs}
    if not credentials.exists() or not all(token_variable(p) in variables for p in PRINCIPALS):
        tokens = {principal: secrets.token_urlsafe(32) for principal in PRINCIPALS}
        grants = {tokens[p]: {"principal": p, "roles": roles} for p, roles in PRINCIPALS.items()}
        credentials.write_text(json.dumps(grants, indent=2) + "\n")
        os.chmod(credentials, 0o644)  # the containers' user reads the secret
        variables.update({token_variable(p): t for p, t in tokens.items()})
    variables.setdefault("MINIO_ROOT_PASSWORD", secrets.token_urlsafe(30))
    for user in USERS:
        variables.setdefault(store_variable(user), secrets.token_urlsafe(30))
    for user in [ADMIN, *TRACKING_USERS]:
        variables.setdefault(password_variable(user), secrets.token_urlsafe(30))
    variables.setdefault("MLFLOW_FLASK_SERVER_SECRET_KEY", secrets.token_urlsafe(32))
    variables.setdefault("MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY", base64.urlsafe_b64encode(os.urandom(32)).decode())
    variables.setdefault("REGISTRY_WEBHOOK_SECRET", secrets.token_urlsafe(32))
    variables.setdefault("REGISTRY_COMMAND_SECRET", secrets.token_urlsafe(32))
    for user in [kafkaaccess.ADMIN, *kafkaaccess.USERS]:
        variables.setdefault(kafka_password_variable(user), secrets.token_urlsafe(30))
    env.write_text("".join(f"{name}={value}\n" for name, value in variables.items()))
    os.chmod(env, 0o600)
    write_access_plan(directory / "kafka-access.plan", variables)
    return variables


def write_access_plan(path: Path, variables: dict[str, str]) -> None:
    """The plan of Kafka's logins and ACLs (every time: the topic graph may have changed since), owner-only."""
    passwords = {user: variables[kafka_password_variable(user)] for user in [kafkaaccess.ADMIN, *kafkaaccess.USERS]}
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(kafkaaccess.plan(passwords[kafkaaccess.ADMIN], passwords, ROLES))


if __name__ == "__main__":
    where = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / ".secrets"
    ensure(where)
    print(
        f"secrets in {where}: credentials.json (the services'), compose.env (tokens, MinIO keys, MLflow and Kafka "
        "passwords), kafka-access.plan (Kafka's logins and ACLs)"
    )
