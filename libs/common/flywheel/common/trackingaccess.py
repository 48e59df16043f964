"""Who may do what in MLflow: a user per service that uses it, through MLflow's basic-auth app.

MLflow runs ``mlflow server --app-name basic-auth`` with ``default_permission = READ``: a service's
user reads every experiment and registered model; it may change only what it created (MLflow gives
the creator MANAGE), so

- ``training`` writes experiments and runs — every experiment, those made before MLflow's login
  existed too (a stack upgraded to it has experiments nobody owns) — and nothing in the model registry;
- ``registry`` creates the registered models and moves their aliases and tags; it is MLflow's admin
  too, because MLflow lets only admins manage the registry webhooks it registers;
- ``serving`` and ``monitoring`` only read.

Ingestion and features use no MLflow, and get no user. The admin (``ADMIN``) is for operators, the
launcher and the compose bootstrap, which provision these users (``provision``); its password
replaces MLflow's: MLflow refuses to start its auth app without one.
"""

from __future__ import annotations

import httpx

ADMIN = "flywheel-admin"
USERS: dict[str, bool] = {"training": False, "registry": True, "serving": False, "monitoring": False}
"""The services that use MLflow, each with whether its user is an MLflow admin."""

GRANTS: dict[str, list[dict[str, str]]] = {
    "training": [{"resource_type": "experiment", "resource_id": "*", "permission": "EDIT"}],
}
"""What a service's user may do beyond reading and what it created."""

AUTH_CONFIG = """[mlflow]
default_permission = READ
database_uri = {database_uri}
admin_username = {admin}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
# a service's credential is checked with PBKDF2 once a minute, not on every request
auth_cache_ttl_seconds = 60
"""


def password_variable(user: str) -> str:
    """The compose variable holding a MLflow user's password (``make compose-secrets`` writes them)."""
    return "FLYWHEEL_MLFLOW_ADMIN_PASSWORD" if user == ADMIN else f"FLYWHEEL_MLFLOW_{user.upper()}_PASSWORD"


def auth_config(database_uri: str) -> str:
    """The basic-auth app's configuration (``MLFLOW_AUTH_CONFIG_PATH``); the admin's password comes from
    ``MLFLOW_AUTH_ADMIN_PASSWORD``, never from this file."""
    return AUTH_CONFIG.format(database_uri=database_uri, admin=ADMIN)


class ProvisionFailed(RuntimeError):
    """MLflow refused to create or update a user."""


def provision(tracking_uri: str, admin_password: str, passwords: dict[str, str], timeout_s: float = 30) -> list[str]:
    """Create each service's user (or reset its password, so a rotated secret takes), and set whether it
    is an admin. ``passwords``: service → password, for the services of ``USERS``. Returns the users."""
    with httpx.Client(base_url=f"{tracking_uri}/api/2.0/mlflow/users", auth=(ADMIN, admin_password)) as http:
        for user, is_admin in USERS.items():
            body = {"username": user, "password": passwords[user]}
            created = http.post("/create", json=body, timeout=timeout_s)
            if created.status_code != 200:
                if "RESOURCE_ALREADY_EXISTS" not in created.text:
                    raise ProvisionFailed(f"MLflow refused user {user!r}: {created.status_code} {created.text[:200]}")
                _ok(http.patch("/update-password", json=body, timeout=timeout_s), user)
            _ok(http.patch("/update-admin", json={"username": user, "is_admin": is_admin}, timeout=timeout_s), user)
            for grant in GRANTS.get(user, []):  # MLflow's own permissions API (3.x), granted once
                granted = http.post(
                    f"{tracking_uri}/api/3.0/mlflow/users/permissions/grant",
                    json={"username": user, **grant},
                    timeout=timeout_s,
                )
                if "RESOURCE_ALREADY_EXISTS" not in granted.text:
                    _ok(granted, user)
    return list(USERS)


def _ok(response: httpx.Response, user: str) -> None:
    if response.status_code != 200:
        raise ProvisionFailed(f"MLflow refused to update user {user!r}: {response.status_code} {response.text[:200]}")
