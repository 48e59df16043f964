"""Monitoring's settings (``MONITORING_*``): windows and thresholds."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from flywheel.common.settings import ServiceSettings
from flywheel.monitoring.monitor import MonitorConfig
from flywheel.monitoring.statistics import Thresholds


class MonitoringSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="MONITORING_", extra="ignore")

    port: int = 8006
    datasets_dir: Path = Field(default=Path("datasets"), description="Data contracts and feature sets.")
    window_size: int = Field(default=1000, ge=10, description="Served predictions in the data-drift window.")
    check_every: int = Field(default=250, ge=1, description="Check data drift every this many predictions.")
    min_window: int = Field(default=200, ge=10, description="No data-drift verdict on fewer predictions.")
    psi_alert: float = Field(default=0.1, description="PSI above which a feature's drift alerts.")
    psi_retrain: float = Field(default=0.25, description="PSI above which drift requests retraining.")
    js_alert: float = Field(default=0.1, description="Jensen-Shannon distance that alerts (categories).")
    alpha: float = Field(default=0.05, description="Significance after Bonferroni correction over features.")
    accuracy_drop: float = Field(default=0.05, description="Alert when accuracy falls this far below training.")
    accuracy_resolve_drop: float = Field(
        default=0.03, ge=0, description="Resolve the accuracy alert once accuracy is back within this of training."
    )
    mae_margin: float = Field(
        default=0.25,
        ge=0,
        description="A regressor alerts when its rolling MAE exceeds its training MAE by this share (0.25: 25%).",
    )
    mae_resolve_margin: float = Field(
        default=0.15, ge=0, description="Resolve the MAE alert once the MAE is back within this share of training's."
    )
    min_labels: int = Field(default=100, description="Labels needed before judging accuracy or MAE.")
    latency_p99_ms: float = Field(default=500.0, description="Alert when prediction latency p99 exceeds this.")
    latency_p99_resolve_ms: float = Field(default=400.0, description="Resolve the latency alert below this p99.")
    missing_rate: float = Field(default=0.05, description="Alert when this share of feature values is missing.")
    missing_rate_resolve: float = Field(
        default=0.03, ge=0, description="Resolve the missing-features alert once the share is below this."
    )
    psi_resolve: float = Field(
        default=0.05, ge=0, description="Resolve the data-drift alert once no feature drifts and every PSI is lower."
    )
    alert_hold_s: float = Field(
        default=30.0,
        ge=0,
        description="An alert raises or resolves only once its new state held this long (every check agreeing).",
    )
    detector: Literal["page_hinkley", "adwin"] = Field(default="page_hinkley", description="Error-stream detector.")
    retrain_cooldown_s: float = Field(default=600.0, description="At most one retrain request per champion per this.")
    retrain_again_s: float = Field(
        default=4200.0,
        gt=0,
        description="A champion still below its accuracy floor this long after a retrain request (or, with none in"
        " memory, below it this long) asks again, even if no candidate of the request was seen ending; longer than"
        " training's wait for fresh rows plus serving's longest rollout (SERVING_ROLLOUT_MAX_S, 3600), so a running"
        " canary is never superseded by the re-ask. A candidate seen ending in vain lets it ask at once.",
    )
    renotify_s: float = Field(default=3600.0, description="Re-send a persisting alert after this long.")
    replay_last: int = Field(
        default=100_000, ge=0, description="On start, refold at most this many acknowledged messages per partition."
    )
    join_rebuild_last: int = Field(
        default=20_000,
        ge=0,
        description="When given a predictions partition, the join remembers at most this many of its newest answers "
        "(labels for older ones are not joined after a restart or rebalance).",
    )
    label_wait_s: float = Field(
        default=60.0,
        gt=0,
        description="A label that names a prediction the join has not read yet waits this long for it.",
    )

    @model_validator(mode="after")
    def _resolve_on_the_safe_side(self) -> MonitoringSettings:
        """Each resolve threshold must lie on the safe side of its raise threshold (or equal it: no band)."""
        self.monitor_config().bands(train_accuracy=1.0, train_mae=1.0)
        if self.accuracy_resolve_drop > self.accuracy_drop or self.psi_resolve > self.psi_alert:
            raise ValueError("accuracy_resolve_drop and psi_resolve must not exceed accuracy_drop and psi_alert")
        return self

    def monitor_config(self) -> MonitorConfig:
        return MonitorConfig(
            window_size=self.window_size,
            check_every=self.check_every,
            min_window=self.min_window,
            thresholds=Thresholds(self.psi_alert, self.psi_retrain, self.js_alert, self.alpha),
            accuracy_drop=self.accuracy_drop,
            min_labels=self.min_labels,
            latency_p99_ms=self.latency_p99_ms,
            missing_rate=self.missing_rate,
            detector=self.detector,
            retrain_cooldown_s=self.retrain_cooldown_s,
            retrain_again_s=self.retrain_again_s,
            renotify_s=self.renotify_s,
            accuracy_resolve_drop=self.accuracy_resolve_drop,
            latency_p99_resolve_ms=self.latency_p99_resolve_ms,
            missing_rate_resolve=self.missing_rate_resolve,
            psi_resolve=self.psi_resolve,
            alert_hold_s=self.alert_hold_s,
            mae_margin=self.mae_margin,
            mae_resolve_margin=self.mae_resolve_margin,
        )
