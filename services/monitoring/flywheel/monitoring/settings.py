"""Monitoring's settings (``MONITORING_*``)."""

from pydantic_settings import SettingsConfigDict

from flywheel.common.settings import ServiceSettings


class MonitoringSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="MONITORING_", extra="ignore")

    port: int = 8006
