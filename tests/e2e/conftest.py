"""End-to-end tests drive the whole running stack (`make up`) as a user would."""

from typing import Any

from flywheel.common.settings import KafkaSettings
from flywheel.demo.scenario import ScenarioConfig
from tests.integration.conftest import kafka, mlflow_settings, services, store_settings, topics  # noqa: F401
from tests.support.stack import service_url


def on_this_stack(**overrides: Any) -> ScenarioConfig:
    """The demo's scenario pointed at the stack the tests talk to (its ports moved by ``FLYWHEEL_STACK_*``)."""
    urls = {f"{name}_url": service_url(name) for name in ("ingestion", "training", "registry", "serving", "monitoring")}
    return ScenarioConfig(**{"bootstrap_servers": KafkaSettings().bootstrap_servers, **urls, **overrides})
