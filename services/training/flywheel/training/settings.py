"""Training's settings (``TRAINING_*``)."""

from pydantic_settings import SettingsConfigDict

from flywheel.common.settings import ServiceSettings


class TrainingSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="TRAINING_", extra="ignore")

    port: int = 8003
