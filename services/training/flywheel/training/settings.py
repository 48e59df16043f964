"""Training's settings (``TRAINING_*``)."""

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from flywheel.common.settings import ServiceSettings


class TrainingSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="TRAINING_", extra="ignore")

    port: int = 8003
    datasets_dir: Path = Field(default=Path("datasets"), description="Feature sets and model specs.")
    consumer_group: str = Field(default="training", description="Kafka consumer group suffix (tests: unique).")
    debounce_s: float = Field(default=5.0, ge=0, description="Per-model window that merges a burst of requests.")
    workers: int = Field(default=1, ge=1, description="Training threads; one run per model at a time regardless.")
    schedule_interval_s: float = Field(default=0.0, ge=0, description="Retrain every N seconds; 0: off.")
    schedule_datasets: list[str] = Field(default=["loans"], description="Datasets retrained on the schedule.")
    experiment_prefix: str = Field(default="flywheel", description="MLflow experiment = <prefix>/<model_name>.")
    importance_repeats: int = Field(default=5, ge=1, description="Permutation importance repeats.")
    fit_threads: int = Field(
        default=1,
        ge=1,
        description="OpenMP/BLAS threads a run fits, scores and logs with. More threads than free cores spin: "
        "beside a busy stack on 2 cores, a 0.2 s gradient-boosting fit took 9 s with 2.",
    )
    fit_niceness: int = Field(
        default=10,
        ge=0,
        le=19,
        description="How far below the service's CPU priority runs fit (Linux nice, per thread): a retrain on a "
        "host it shares with serving yields the cores to requests. 0: the same priority.",
    )
    drift_fresh_rows: int = Field(
        default=1000, ge=0, description="A drift retrain waits for this many labelled rows recorded after the drift."
    )
    drift_fresh_timeout_s: float = Field(
        default=300.0, ge=0, description="...for at most this long, then trains on the newest version."
    )
    max_runs_kept: int = Field(default=200, ge=1, description="Runs remembered for GET /runs.")
    run_attempts: int = Field(
        default=5, ge=1, description="Attempts of a run whose failure may be transient (the backoffs outlast ~30 s)."
    )
    retry_backoff_s: float = Field(default=2.0, ge=0, description="Backoff before a run's second attempt; doubles.")
    handover_timeout_s: float = Field(
        default=240.0,
        ge=0,
        description="On a rebalance, how long running runs may finish before their partition is handed over "
        "(below the consumer's 300 s rebalance timeout); a run still going is abandoned and run by the next owner.",
    )
    shutdown_grace_s: float = Field(
        default=8.0,
        ge=0,
        description="On shutdown, how long running runs may finish (within the 10 s a stop grants); "
        "the rest run again after the restart.",
    )
