"""Ingestion's settings (``INGESTION_*``)."""

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from flywheel.common.settings import ServiceSettings


class IngestionSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="INGESTION_", extra="ignore")

    port: int = 8001
    datasets_dir: Path = Field(default=Path("datasets"), description="Where the data contracts live.")
    max_batch: int = Field(default=1000, ge=1, description="Most records one POST /records may carry.")
    version_max_rows: int = Field(default=1000, ge=1, description="Seal a dataset version at this many rows.")
    version_max_age_s: float = Field(default=15.0, gt=0, description="...or when its oldest row is this old.")
    seal_timeout_s: float = Field(
        default=3.0, gt=0, description="POST /datasets/{d}/seal answers 503 after this long (the seal goes on)."
    )
    label_wait_s: float = Field(
        default=600.0, gt=0, description="A label naming a record not seen yet waits this long, then is dead-lettered."
    )
    roller_group: str = Field(
        default="flywheel-ingestion-roller",
        description="Consumer group the rollers of all replicas share: it only assigns partitions (no commits).",
    )
