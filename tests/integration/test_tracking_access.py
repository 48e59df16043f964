"""MLflow behind its basic-auth app: nobody without a login, and each service's user changes only its own.

The users are the launcher's (``flywheel.common.trackingaccess``, passwords in
``.stack/mlflow-users.json``); the tests log in as each, on the real MLflow of the running stack.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from flywheel.common.settings import MlflowSettings
from flywheel.common.trackingaccess import ADMIN, USERS
from infra.launcher.commands import components
from infra.launcher.credentials import tracking_passwords

SEARCH = "/api/2.0/mlflow/registered-models/search"
USER = "/api/2.0/mlflow/users/get"


@contextmanager
def logged_in_as(user: str, tracking_uri: str) -> Iterator[MlflowClient]:
    """A client that logs in as ``user`` (MLflow reads the login from the environment on each request)."""
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")}
    os.environ["MLFLOW_TRACKING_USERNAME"] = user
    os.environ["MLFLOW_TRACKING_PASSWORD"] = tracking_passwords()[user]
    try:
        yield MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def refused(action) -> str:
    """The error code MLflow answered ``action`` with; fails when MLflow allowed it."""
    with pytest.raises(MlflowException) as caught:
        action()
    return caught.value.error_code


def test_mlflow_answers_nobody_without_a_valid_login(mlflow_settings: MlflowSettings):
    uri = mlflow_settings.tracking_uri
    assert httpx.get(f"{uri}{SEARCH}").status_code == 401
    assert httpx.get(f"{uri}{SEARCH}", auth=("serving", "not-its-password")).status_code == 401
    assert httpx.get(f"{uri}{SEARCH}", auth=("admin", "password1234")).status_code == 401  # MLflow's old default
    assert httpx.get(f"{uri}/health").status_code == 200  # the health check alone is open
    for user in USERS:
        assert httpx.get(f"{uri}{SEARCH}", auth=(user, tracking_passwords()[user])).status_code == 200


def test_each_service_changes_only_what_it_may(mlflow_settings: MlflowSettings):
    uri, name = mlflow_settings.tracking_uri, f"it-access-{uuid.uuid4().hex[:8]}"
    with logged_in_as("training", uri) as training:  # training logs runs in its experiments
        run_id = training.create_run(training.create_experiment(name)).info.run_id
        training.log_metric(run_id, "rmse", 1.0)
    with logged_in_as("registry", uri) as registry:  # the registry registers, moves aliases, tags versions
        registry.create_registered_model(name)
        version = registry.create_model_version(name, f"runs:/{run_id}/model", run_id=run_id).version
        registry.set_registered_model_alias(name, "champion", version)
        registry.set_model_version_tag(name, version, "flywheel.decision", "approved")
    for reader in ("serving", "monitoring"):
        with logged_in_as(reader, uri) as client:
            assert client.get_model_version_by_alias(name, "champion").version == version  # they read
            assert client.get_run(run_id).data.metrics == {"rmse": 1.0}
            for change in (
                lambda c=client: c.set_registered_model_alias(name, "champion", version),
                lambda c=client: c.set_model_version_tag(name, version, "k", "v"),
                lambda c=client: c.delete_registered_model(name),
                lambda c=client: c.log_metric(run_id, "rmse", 0.0),
            ):
                assert refused(change) == "PERMISSION_DENIED", reader
    with logged_in_as("training", uri) as training:  # training cannot move a champion
        assert refused(lambda: training.set_registered_model_alias(name, "champion", version)) == "PERMISSION_DENIED"
        assert refused(lambda: training.delete_model_version(name, version)) == "PERMISSION_DENIED"


def test_the_services_log_in_as_their_own_users(mlflow_settings: MlflowSettings, services: dict[str, str]):
    """A service's /health asks MLflow with its own login; only the registry's user is an MLflow admin."""
    env = {c.name: c.env for c in components()}
    admin = (ADMIN, tracking_passwords()[ADMIN])
    for service, url in services.items():
        login = env[service].get("FLYWHEEL_MLFLOW_USERNAME")
        if service not in USERS:  # it uses no MLflow: no login, and its health does not ask MLflow
            assert login is None and "mlflow" not in httpx.get(f"{url}/health").json()["checks"], service
            continue
        assert login == service
        assert httpx.get(f"{url}/health").json()["checks"]["mlflow"] == "ok", service
        user = httpx.get(f"{mlflow_settings.tracking_uri}{USER}", params={"username": service}, auth=admin)
        assert user.json()["user"]["is_admin"] is USERS[service], user.text


def test_training_writes_in_an_experiment_it_did_not_make(mlflow_settings: MlflowSettings):
    """As in a stack upgraded to MLflow's login: an experiment nobody's user owns (here, the admin's)."""
    uri, name = mlflow_settings.tracking_uri, f"it-upgraded-{uuid.uuid4().hex[:8]}"
    with logged_in_as(ADMIN, uri) as admin:
        experiment = admin.create_experiment(name)
    with logged_in_as("training", uri) as training:
        run_id = training.create_run(experiment).info.run_id
        training.log_metric(run_id, "rmse", 1.0)
    with logged_in_as("serving", uri) as serving:  # the others still only read it
        assert refused(lambda: serving.create_run(experiment)) == "PERMISSION_DENIED"
