"""docker-compose.yml deploys the same nine components, each configured completely."""

import importlib
from pathlib import Path

import pytest
import yaml

from flywheel.common.envvars import env_vars

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ["ingestion", "features", "training", "registry", "serving", "monitoring"]


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def settings_class(service: str) -> type:
    module = importlib.import_module(f"flywheel.{service}.settings")
    return getattr(module, f"{service.capitalize()}Settings")


def test_compose_names_all_nine_components(compose):
    assert {"kafka", "minio", "mlflow", *SERVICES} <= set(compose["services"])


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_gets_every_variable_its_settings_read(compose, service):
    spec = compose["services"][service]
    environment = spec["environment"]
    missing = sorted(set(env_vars(settings_class(service))) - set(environment))
    assert missing == [], f"{service} in docker-compose.yml lacks {missing}"
    assert environment["SERVICE"] == service


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_waits_for_healthy_dependencies_and_has_a_health_check(compose, service):
    spec = compose["services"][service]
    assert spec["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert spec["depends_on"]["mlflow"]["condition"] == "service_healthy"
    assert "/health" in " ".join(spec["healthcheck"]["test"])
    port = str(settings_class(service)().port)
    assert any(p.startswith(f"{port}:") for p in spec["ports"])


@pytest.mark.parametrize("component", ["kafka", "minio", "mlflow"])
def test_infrastructure_has_health_checks(compose, component):
    assert compose["services"][component]["healthcheck"]["test"]
