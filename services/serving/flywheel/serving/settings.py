"""Serving's settings (``SERVING_*``): registry access, rollout strategy and its sequential test."""

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from flywheel.common.settings import ServiceSettings
from flywheel.serving.rollout import Policy

Strategy = Literal["shadow", "canary", "ab", "blue_green"]


class ServingSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="SERVING_", extra="ignore")

    port: int = 8005
    datasets_dir: Path = Field(default=Path("datasets"), description="Model specs and feature sets.")
    registry_url: str = Field(default="http://127.0.0.1:8004", description="The registry's HTTP API.")
    registry_token: str = Field(
        default="flywheel-dev-serving",
        description="Serving's bearer token for the registry's promote and rollback (the history names its principal).",
    )
    strategy: Strategy = Field(default="canary", description="Rollout strategy for approved candidates.")
    canary_steps: list[float] = Field(default=[0.1, 0.25, 0.5, 1.0], description="Candidate traffic per step.")
    ab_split: float = Field(default=0.5, description="Candidate share in an A/B rollout (sticky per entity).")
    rollout_alpha: float = Field(
        default=0.05,
        gt=0,
        lt=1,
        description=(
            "Significance level of a rollout's decisions: the chance that a candidate no different from the "
            "champion is ever promoted or rolled back (split over accuracy, or a regressor's mean absolute error, "
            "error rate and slow answers)."
        ),
    )
    rollout_tau: float = Field(
        default=0.1,
        gt=0,
        description=(
            "Mixing standard deviation of the sequential test (mSPRT): the difference of rates found fastest, "
            "and of a regressor's mean absolute errors in standard deviations of its errors."
        ),
    )
    min_labels: int = Field(
        default=100, ge=1, description="Labelled answers per variant before accuracy (a regressor's mae) is judged."
    )
    min_requests: int = Field(
        default=100,
        ge=1,
        description="Answers per variant before error rate and latency are judged; candidate answers per canary step.",
    )
    slow_ms: float = Field(
        default=100.0,
        gt=0,
        description="An answer slower than this counts as slow; rollouts compare the variants' shares of slow answers.",
    )
    rollout_max_s: float = Field(
        default=3600.0,
        gt=0,
        description="A rollout with no significant difference after this long ends inconclusive; the champion stays.",
    )
    log_queue_size: int = Field(default=10_000, ge=1, description="Predictions waiting to be published to the log.")
    log_wait_s: float = Field(
        default=5.0, ge=0, description="How long a request waits for room in a full prediction log before it drops."
    )
    bake_s: float = Field(
        default=600.0,
        ge=0,
        description="After a promotion, how long a champion significantly worse than its predecessor is rolled back.",
    )
    model_threads: int = Field(
        default=1, ge=1, description="OpenMP/BLAS threads per model call; 1 avoids thread start-up on small batches."
    )
    batch_max: int = Field(
        default=1000, description="Most records one /predict call may carry, and one model call scores."
    )
    feature_max_age_s: float | None = Field(
        default=86_400.0,
        gt=0,
        description=(
            "Oldest stored feature vector a request by entity id is answered from (its event time to now); "
            "older: 409. Unset: any age."
        ),
    )

    def policy(self) -> Policy:
        """The rollout's (and the guard's) statistical policy."""
        return Policy(
            alpha=self.rollout_alpha,
            tau=self.rollout_tau,
            min_labels=self.min_labels,
            min_requests=self.min_requests,
            slow_ms=self.slow_ms,
            max_s=self.rollout_max_s,
        )
