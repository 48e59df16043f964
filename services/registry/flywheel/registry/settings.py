"""Registry's settings (``REGISTRY_*``)."""

from pydantic_settings import SettingsConfigDict

from flywheel.common.settings import ServiceSettings


class RegistrySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="REGISTRY_", extra="ignore")

    port: int = 8004
