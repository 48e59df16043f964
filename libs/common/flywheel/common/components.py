"""The shared components a service connects to, built once in its composition root."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from faststream.kafka import KafkaBroker
from mlflow import MlflowClient

from flywheel.common.kafka import create_broker
from flywheel.common.logs import configure_logging
from flywheel.common.objectstore import ObjectStore
from flywheel.common.service import HealthCheck, blocking_check, broker_check, consumers_check
from flywheel.common.settings import ServiceSettings
from flywheel.common.tracking import configure_mlflow

Adapter = Literal["object_store", "mlflow"]  # besides the broker, which every service uses


@dataclass
class Components:
    """Broker, and the object store and MLflow client where the service uses them, plus their health checks.

    A service connects only what it uses (``uses``), and its ``/health`` reports those alone: ingestion
    answers while MLflow is down. Reaching for an adapter it did not declare is a programming error.

    >>> from flywheel.common.settings import ServiceSettings
    >>> parts = Components.connect("features", ServiceSettings(), uses={"object_store"})
    >>> sorted(parts.checks())
    ['kafka', 'kafka_consumers', 'object_store']
    >>> parts.mlflow
    Traceback (most recent call last):
    ...
    RuntimeError: features does not connect to MLflow (Components.connect(uses=...))
    """

    service: str
    settings: ServiceSettings
    broker: KafkaBroker
    log: Any
    connected_store: ObjectStore | None = None
    connected_mlflow: MlflowClient | None = None

    @classmethod
    def connect(
        cls, service: str, settings: ServiceSettings, uses: Iterable[Adapter] = ("object_store", "mlflow")
    ) -> Components:
        log = configure_logging(service, fmt=settings.log_format, level=settings.log_level)
        uses = set(uses)
        return cls(
            service=service,
            settings=settings,
            broker=create_broker(settings.kafka, service=service),
            log=log,
            connected_store=ObjectStore(settings.s3) if "object_store" in uses else None,
            connected_mlflow=configure_mlflow(settings.mlflow, settings.s3) if "mlflow" in uses else None,
        )

    @property
    def store(self) -> ObjectStore:
        if self.connected_store is None:
            raise RuntimeError(f"{self.service} does not connect to the object store (Components.connect(uses=...))")
        return self.connected_store

    @property
    def mlflow(self) -> MlflowClient:
        if self.connected_mlflow is None:
            raise RuntimeError(f"{self.service} does not connect to MLflow (Components.connect(uses=...))")
        return self.connected_mlflow

    def checks(self) -> dict[str, HealthCheck]:
        """Health of each connection it uses: the broker, and the object store and MLflow server if used."""
        checks = {"kafka": broker_check(self.broker), "kafka_consumers": consumers_check(self.broker)}
        if self.connected_store is not None:
            checks["object_store"] = blocking_check(self.connected_store.ping)
        if self.connected_mlflow is not None:
            client = self.connected_mlflow
            checks["mlflow"] = blocking_check(lambda: client.search_experiments(max_results=1) is not None)
        return checks
