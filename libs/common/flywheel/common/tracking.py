"""MLflow wired to the tracking server and to MinIO as its artifact store."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from flywheel.common.settings import MlflowSettings, ObjectStoreSettings


def configure_mlflow(tracking: MlflowSettings, store: ObjectStoreSettings) -> MlflowClient:
    """Point MLflow (and boto3 under it) at the tracking server and MinIO; return a client.

    MLflow and boto3 read their S3 endpoint and credentials, and MLflow its login, from the process
    environment only, so this is the one place that writes them there.
    """
    if tracking.username:
        os.environ["MLFLOW_TRACKING_USERNAME"] = tracking.username
        os.environ["MLFLOW_TRACKING_PASSWORD"] = tracking.password.get_secret_value()
    os.environ["MLFLOW_S3_ENDPOINT_URL"] = store.endpoint_url
    os.environ["AWS_ACCESS_KEY_ID"] = store.access_key
    os.environ["AWS_SECRET_ACCESS_KEY"] = store.secret_key
    os.environ.setdefault("AWS_DEFAULT_REGION", store.region)
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")
    mlflow.set_tracking_uri(tracking.tracking_uri)
    mlflow.set_registry_uri(tracking.tracking_uri)
    return MlflowClient(tracking_uri=tracking.tracking_uri, registry_uri=tracking.tracking_uri)


def is_missing(exc: MlflowException) -> bool:
    """Whether MLflow said "no such thing", or that the id cannot name one (as opposed to failing to answer).

    Behind its basic-auth app MLflow answers a read of a model or run it cannot find with 403, not 404
    (it finds no permission to check). Every Flywheel user may read everything (``default_permission``
    is READ, ``flywheel.common.trackingaccess``), so on a read a 403 means: no such thing.
    """
    return exc.error_code in {"RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "INVALID_PARAMETER_VALUE", "PERMISSION_DENIED"}


Registered = Callable[[str, str], Awaitable[bool]]
"""Asks whether the registry holds a version of a model: ``await registered(name, version)``."""


def version_registered(client: MlflowClient, name: str, version: str) -> bool:
    """Whether the registry holds this version of this model; raises when MLflow cannot say (retry later)."""
    try:
        client.get_model_version(name, version)
    except MlflowException as exc:
        if is_missing(exc):
            return False
        raise
    return True


ChampionOf = Callable[[str], Awaitable[str | None]]
"""Asks the registry which version of a model is its champion now: ``await champion_of(name)``; None if none."""


def champion_version(client: MlflowClient, name: str) -> str | None:
    """The version the registry's ``champion`` alias names now; None when the model has no champion (or no
    such model); raises when MLflow cannot say (retry later)."""
    try:
        return str(client.get_model_version_by_alias(name, "champion").version)
    except MlflowException as exc:
        if is_missing(exc):
            return None
        raise


def run_exists(client: MlflowClient, run_id: str) -> bool:
    """Whether MLflow knows this run; raises when MLflow cannot say (retry later)."""
    try:
        client.get_run(run_id)
    except MlflowException as exc:
        if is_missing(exc):
            return False
        raise
    return True


class Tags:
    """MLflow run tags every service agrees on: a model's lineage, readable by anyone."""

    DATASET = "flywheel.dataset"
    DATASET_VERSION = "flywheel.dataset_version"
    CODE_VERSION = "flywheel.code_version"
    FEATURE_SET = "flywheel.feature_set"
    FEATURE_SET_VERSION = "flywheel.feature_set_version"
    MODEL_SPEC = "flywheel.model_spec"
    LEARNS_ONLINE = (
        "flywheel.learns_online"  # "true": serving logs the answers' inputs, an online challenger learns them
    )
    LEARNING = "flywheel.learning"  # batch, or online (a snapshot of the online challenger)
    TRIGGER_EVENT_ID = "flywheel.trigger_event_id"
    CORRELATION_ID = "flywheel.correlation_id"
    CAUSATION_CHAIN = "flywheel.causation_chain"
    SEED = "flywheel.seed"
