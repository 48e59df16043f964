"""Serving's settings (``SERVING_*``)."""

from pydantic_settings import SettingsConfigDict

from flywheel.common.settings import ServiceSettings


class ServingSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="SERVING_", extra="ignore")

    port: int = 8005
