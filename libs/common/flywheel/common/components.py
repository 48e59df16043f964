"""The shared components a service connects to, built once in its composition root."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from faststream.kafka import KafkaBroker
from mlflow import MlflowClient

from flywheel.common.kafka import create_broker
from flywheel.common.logs import configure_logging
from flywheel.common.objectstore import ObjectStore
from flywheel.common.service import HealthCheck, blocking_check, broker_check
from flywheel.common.settings import ServiceSettings
from flywheel.common.tracking import configure_mlflow


@dataclass
class Components:
    """Broker, object store and MLflow client of one service, plus its health checks."""

    service: str
    settings: ServiceSettings
    broker: KafkaBroker
    store: ObjectStore
    mlflow: MlflowClient
    log: Any

    @classmethod
    def connect(cls, service: str, settings: ServiceSettings) -> Components:
        log = configure_logging(service, fmt=settings.log_format, level=settings.log_level)
        return cls(
            service=service,
            settings=settings,
            broker=create_broker(settings.kafka, service=service),
            store=ObjectStore(settings.s3),
            mlflow=configure_mlflow(settings.mlflow, settings.s3),
            log=log,
        )

    def checks(self) -> dict[str, HealthCheck]:
        """Health of each connection: the broker, the object store, the MLflow server."""
        return {
            "kafka": broker_check(self.broker),
            "object_store": blocking_check(self.store.ping),
            "mlflow": blocking_check(lambda: self.mlflow.search_experiments(max_results=1) is not None),
        }
