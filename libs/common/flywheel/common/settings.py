"""Settings shared by every service; each service adds its own class with its env prefix."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from flywheel.common.auth import AuthSettings
from flywheel.common.safemodels import TRUSTED_MODULES


class KafkaSettings(BaseSettings):
    """Where the Kafka cluster is and how to talk to it (``FLYWHEEL_KAFKA_*``)."""

    model_config = SettingsConfigDict(env_prefix="FLYWHEEL_KAFKA_")

    bootstrap_servers: str = "127.0.0.1:9092"
    username: str = Field(
        default="",
        description="This client's Kafka principal, logged in with SASL/SCRAM-SHA-256 (flywheel.common.kafkaaccess); "
        "empty: no login (a PLAINTEXT broker).",
    )
    password: SecretStr = Field(default=SecretStr(""), description="Its password.")
    dead_letter_attempts: int = Field(
        default=3, ge=1, description="Tries of a failing handler before its message is dead-lettered."
    )
    retry_backoff_s: float = Field(default=0.2, ge=0, description="Pause between those tries.")


class ObjectStoreSettings(BaseSettings):
    """The S3-compatible object store, MinIO here (``FLYWHEEL_S3_*``)."""

    model_config = SettingsConfigDict(env_prefix="FLYWHEEL_S3_")

    endpoint_url: str = "http://127.0.0.1:9000"
    access_key: str = "flywheel"
    secret_key: str = "flywheel-secret"
    bucket: str = "flywheel"
    region: str = "us-east-1"


class MlflowSettings(BaseSettings):
    """The MLflow tracking server and registry (``FLYWHEEL_MLFLOW_*``)."""

    model_config = SettingsConfigDict(env_prefix="FLYWHEEL_MLFLOW_")

    tracking_uri: str = "http://127.0.0.1:5000"
    artifact_bucket: str = "mlflow"
    username: str = Field(
        default="", description="This service's MLflow user (flywheel.common.trackingaccess); empty: no login."
    )
    password: SecretStr = Field(default=SecretStr(""), description="Its password.")
    trusted_modules: list[str] = Field(
        default=list(TRUSTED_MODULES),
        description=(
            "Modules whose types a logged model may contain to be loaded (skops only, never a pickle); "
            "a model holding any other type is refused before it is loaded."
        ),
    )


class ServiceSettings(BaseSettings):
    """What every service has: where it listens, how it logs, and the shared components.

    A service subclasses this with ``env_prefix="<NAME>_"``; the shared parts keep
    their own ``FLYWHEEL_*`` prefixes so one environment configures all six.
    """

    model_config = SettingsConfigDict(env_prefix="FLYWHEEL_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8000
    log_format: str = Field(default="auto", description="auto (JSON unless a terminal), json, console")
    log_level: str = "INFO"
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    s3: ObjectStoreSettings = Field(default_factory=ObjectStoreSettings)
    mlflow: MlflowSettings = Field(default_factory=MlflowSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
