"""Integration tests run against the real Kafka, MinIO and MLflow (and services) of `make up`.

A missing component fails the run with how to start it; nothing here is skipped.
"""

from __future__ import annotations

import socket

import httpx
import pytest

from flywheel.common.objectstore import ObjectStore
from flywheel.common.settings import KafkaSettings, MlflowSettings, ObjectStoreSettings
from tests.support.kafka import ensure_topics
from tests.support.stack import SERVICE_PORTS, service_url  # the launcher's one port table


def _reachable(hostport: str) -> bool:
    host, port = hostport.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def kafka() -> KafkaSettings:
    settings = KafkaSettings()
    if not _reachable(settings.bootstrap_servers.split(",")[0]):
        pytest.fail(f"Kafka is not reachable at {settings.bootstrap_servers}: run `make up`", pytrace=False)
    return settings


@pytest.fixture(scope="session")
def store_settings() -> ObjectStoreSettings:
    settings = ObjectStoreSettings()
    try:
        ObjectStore(settings).ping()
    except Exception as exc:
        pytest.fail(f"MinIO is not reachable at {settings.endpoint_url} ({exc}): run `make up`", pytrace=False)
    return settings


@pytest.fixture(scope="session")
def mlflow_settings() -> MlflowSettings:
    settings = MlflowSettings()
    try:
        httpx.get(f"{settings.tracking_uri}/health", timeout=3).raise_for_status()
    except Exception as exc:
        pytest.fail(f"MLflow is not reachable at {settings.tracking_uri} ({exc}): run `make up`", pytrace=False)
    return settings


@pytest.fixture(scope="session")
async def topics(kafka: KafkaSettings) -> None:
    await ensure_topics(kafka.bootstrap_servers)


@pytest.fixture(scope="session")
def services() -> dict[str, str]:
    """The six running services' base URLs; fails if any is not healthy."""
    urls = {name: service_url(name) for name in SERVICE_PORTS}
    down = []
    for name, url in urls.items():
        try:
            httpx.get(f"{url}/health", timeout=5).raise_for_status()
        except Exception as exc:
            down.append(f"{name} ({exc})")
    if down:
        pytest.fail(f"services not healthy: {', '.join(down)}: run `make up`", pytrace=False)
    return urls
