"""Features's settings (``FEATURES_*``)."""

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from flywheel.common.settings import ServiceSettings


class FeaturesSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="FEATURES_", extra="ignore")

    port: int = 8002
    datasets_dir: Path = Field(default=Path("datasets"), description="Where the feature sets live.")
    dedup_capacity: int = Field(default=1_000_000, ge=1, description="Event ids remembered to count each record once.")
    replay_max_backoff_s: float = Field(
        default=30.0, gt=0, description="Longest wait between attempts to replay records.validated on start."
    )
