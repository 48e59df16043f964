"""Features's settings (``FEATURES_*``)."""

from pydantic_settings import SettingsConfigDict

from flywheel.common.settings import ServiceSettings


class FeaturesSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="FEATURES_", extra="ignore")

    port: int = 8002
