"""Monitoring's settings (``MONITORING_*``): windows and thresholds."""

from pathlib import Path
from typing import Literal

from pydantic import Field
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
    min_labels: int = Field(default=100, description="Labels needed before judging accuracy.")
    latency_p99_ms: float = Field(default=500.0, description="Alert when prediction latency p99 exceeds this.")
    missing_rate: float = Field(default=0.05, description="Alert when this share of feature values is missing.")
    detector: Literal["page_hinkley", "adwin"] = Field(default="page_hinkley", description="Error-stream detector.")
    retrain_cooldown_s: float = Field(default=600.0, description="At most one retrain request per champion per this.")
    renotify_s: float = Field(default=3600.0, description="Re-send a persisting alert after this long.")
    replay_last: int = Field(
        default=100_000, ge=0, description="On start, refold at most this many acknowledged messages per partition."
    )

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
            renotify_s=self.renotify_s,
        )
