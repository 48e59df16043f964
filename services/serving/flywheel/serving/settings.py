"""Serving's settings (``SERVING_*``): registry access, rollout strategy and its margins."""

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from flywheel.common.settings import ServiceSettings

Strategy = Literal["shadow", "canary", "ab", "blue_green"]


class ServingSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="SERVING_", extra="ignore")

    port: int = 8005
    datasets_dir: Path = Field(default=Path("datasets"), description="Model specs and feature sets.")
    registry_url: str = Field(default="http://127.0.0.1:8004", description="The registry's HTTP API.")
    registry_token: str = Field(default="flywheel-dev-token", description="Bearer token for promote calls.")
    strategy: Strategy = Field(default="canary", description="Rollout strategy for approved candidates.")
    canary_steps: list[float] = Field(default=[0.1, 0.25, 0.5, 1.0], description="Candidate traffic per step.")
    ab_split: float = Field(default=0.5, description="Candidate share in an A/B rollout (sticky per entity).")
    min_requests: int = Field(default=50, description="Candidate requests needed before a step is judged.")
    min_labels: int = Field(default=30, description="Labelled candidate answers needed before a step is judged.")
    accuracy_margin: float = Field(default=0.02, description="Roll back when the candidate is this much less accurate.")
    error_rate_margin: float = Field(default=0.01, description="Roll back when its error rate is this much higher.")
    latency_p99_ratio: float = Field(default=3.0, description="Roll back when its p99 is this many times worse.")
    latency_floor_ms: float = Field(
        default=100.0, description="A p99 below this never counts as worse (small absolute latencies are noise)."
    )
    log_queue_size: int = Field(default=10_000, ge=1, description="Predictions waiting to be published to the log.")
    log_wait_s: float = Field(
        default=5.0, ge=0, description="How long a request waits for room in a full prediction log before it drops."
    )
    bake_s: float = Field(
        default=600.0,
        ge=0,
        description="After a promotion, how long a champion worse than its predecessor is rolled back.",
    )
    model_threads: int = Field(
        default=1, ge=1, description="OpenMP/BLAS threads per model call; 1 avoids thread start-up on small batches."
    )
    batch_max: int = Field(default=1000, description="Most records one /predict call may carry.")
    feature_max_age_s: float | None = Field(
        default=86_400.0,
        gt=0,
        description=(
            "Oldest stored feature vector a request by entity id is answered from (its event time to now); "
            "older: 409. Unset: any age."
        ),
    )
