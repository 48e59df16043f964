"""Where the CLI finds a deployment (``FLYWHEEL_*``): the local stack unless told otherwise."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from flywheel.common.settings import KafkaSettings, MlflowSettings, ObjectStoreSettings

SERVICES = ("ingestion", "features", "training", "registry", "serving", "monitoring")


class CliSettings(BaseSettings):
    """The deployment one ``flywheel`` command talks to; every URL can point at a remote host."""

    model_config = SettingsConfigDict(env_prefix="FLYWHEEL_", extra="ignore")

    ingestion_url: str = Field(default="http://127.0.0.1:8001", description="Ingestion's HTTP API.")
    features_url: str = Field(default="http://127.0.0.1:8002", description="Features' HTTP API.")
    training_url: str = Field(default="http://127.0.0.1:8003", description="Training's HTTP API.")
    registry_url: str = Field(default="http://127.0.0.1:8004", description="Registry's HTTP API.")
    serving_url: str = Field(default="http://127.0.0.1:8005", description="Serving's HTTP API.")
    monitoring_url: str = Field(default="http://127.0.0.1:8006", description="Monitoring's HTTP API.")
    token: str = Field(
        default="flywheel-dev-token",
        description="Operator credential (bearer token) for train, rebuild, promote, rollback and approve; the "
        "audit trail names its principal. The default is the development stack's (make up); a deployment refuses it.",
    )
    actor: str = Field(default="", description="Who asked for a rebuild, in its reason; default: $USER.")
    http_timeout_s: float = Field(default=10.0, gt=0, description="Timeout of one HTTP call.")
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    s3: ObjectStoreSettings = Field(default_factory=ObjectStoreSettings)
    mlflow: MlflowSettings = Field(default_factory=MlflowSettings)

    def url(self, service: str) -> str:
        return str(getattr(self, f"{service}_url")).rstrip("/")

    def on_host(self, host: str) -> CliSettings:
        """The same deployment on another host: every URL and Kafka keep their ports.

        >>> s = CliSettings().on_host("flywheel.prod")
        >>> s.registry_url, s.kafka.bootstrap_servers, s.s3.endpoint_url
        ('http://flywheel.prod:8004', 'flywheel.prod:9092', 'http://flywheel.prod:9000')
        """
        port = self.kafka.bootstrap_servers.split(",")[0].rsplit(":", 1)[-1]
        updates: dict[str, object] = {f"{s}_url": _on_host(self.url(s), host) for s in SERVICES}
        updates["kafka"] = self.kafka.model_copy(update={"bootstrap_servers": f"{host}:{port}"})
        updates["mlflow"] = self.mlflow.model_copy(update={"tracking_uri": _on_host(self.mlflow.tracking_uri, host)})
        updates["s3"] = self.s3.model_copy(update={"endpoint_url": _on_host(self.s3.endpoint_url, host)})
        return self.model_copy(update=updates)


def _on_host(url: str, host: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=host if parts.port is None else f"{host}:{parts.port}"))
