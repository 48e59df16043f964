"""Registry's settings (``REGISTRY_*``)."""

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from flywheel.common.settings import ServiceSettings


class RegistrySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="REGISTRY_", extra="ignore")

    port: int = 8004
    api_token: str = Field(default="flywheel-dev-token", description="Bearer token for promote/rollback/approve.")
    consumer_group: str = Field(default="registry", description="Kafka consumer group suffix (tests: unique).")
    thresholds: dict[str, float] = Field(
        default={"accuracy": 0.85, "f1": 0.80}, description="Absolute gates: metric >= threshold."
    )
    champion_metric: str = Field(default="f1", description="Metric the candidate must not lose on vs the champion.")
    min_improvement: float = Field(
        default=0.0, description="Candidate must reach champion + this on the same eval data (0: not worse)."
    )
    manual_approval: bool = Field(default=False, description="Hold passing candidates until POST .../approve.")
    history_kept: int = Field(default=30, ge=1, description="Champion moves kept per model.")
