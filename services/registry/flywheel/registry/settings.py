"""Registry's settings (``REGISTRY_*``)."""

from pathlib import Path

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import SettingsConfigDict

from flywheel.common.evaluation import metrics_of_task
from flywheel.common.modelspec import GateMetric, GateSpec, PrimaryMetric, Task
from flywheel.common.settings import ServiceSettings


class RegistrySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="REGISTRY_", extra="ignore")

    port: int = 8004
    consumer_group: str = Field(default="registry", description="Kafka consumer group suffix (tests: unique).")
    datasets_dir: Path = Field(
        default=Path("datasets"), description="Model specs (their gates) and the feature sets of unpinned runs."
    )
    # The defaults of every model's gates; a model spec's `gates:` wins field by field.
    # Balanced accuracy: the majority class scores 0.5 on it whatever the classes' shares, so "beats the
    # baseline" means the same on 24% positives as on 50%; on accuracy a fair model of rare positives
    # beats "always the majority" by a point or two, which a 300-row slice's noise decides.
    primary_metric: PrimaryMetric = Field(
        default="balanced_accuracy",
        description="Metric a classifier is judged on against the baseline and the champion.",
    )
    # RMSE: the error a regressor is usually asked about, in the label's units, weighing large misses more
    # than MAE; R² would make every margin absolute again, and is undefined on a slice of one value.
    regression_primary_metric: PrimaryMetric = Field(
        default="rmse",
        description="Metric a regressor is judged on against the baseline (the mean) and the champion.",
    )
    thresholds: dict[GateMetric, float] = Field(
        default={},
        description="Absolute gates: metric >= threshold (log_loss, rmse, mae <=); none by default. "
        "Each applies to the models whose task reports its metric.",
    )
    # On rmse and mae, the margins below are fractions of the reference's figure (0.01: 1% lower error).
    baseline_margin: float = Field(
        default=0.01,
        description="Candidate must beat the trivial baseline (majority class; the mean) by this out of time.",
    )
    min_improvement: float = Field(
        default=0.0, description="Candidate must reach champion + this on the same slice (0: not worse)."
    )
    # 0.10: a drift retrain on real data with a real change of concept (rain's) is ~9 points of balanced
    # accuracy worse than the champion on the old concept, which 0.05 rejected half of the time on noise;
    # a retrain that forgot the old concept (a flipped or swapped one) is 30+ points worse.
    before_tolerance: float = Field(
        default=0.10,
        ge=0,
        description="On a drift retrain's pre-drift slice: at most this much worse than the champion.",
    )

    @field_validator("primary_metric", "regression_primary_metric")
    @classmethod
    def _a_metric_of_its_task(cls, metric: str, info: ValidationInfo) -> str:
        task = "regression" if info.field_name == "regression_primary_metric" else "classification"
        if metric not in metrics_of_task(task):
            raise ValueError(f"{metric} is not a {task} metric ({', '.join(metrics_of_task(task))})")
        return metric

    def default_gates(self, task: Task = "classification") -> GateSpec:
        """The gates of a model of ``task`` whose spec sets none: that task's primary metric and thresholds."""
        primary = self.regression_primary_metric if task == "regression" else self.primary_metric
        return GateSpec(
            primary_metric=primary,
            thresholds={m: v for m, v in self.thresholds.items() if m in metrics_of_task(task)},
            baseline_margin=self.baseline_margin,
            min_improvement=self.min_improvement,
            before_tolerance=self.before_tolerance,
        )

    manual_approval: bool = Field(default=False, description="Hold passing candidates until POST .../approve.")
    reconcile_s: float = Field(
        default=3.0,
        ge=0,
        description="Every this many seconds, follow or put back champion aliases moved in MLflow by hand; 0: never.",
    )
    webhook_url: str = Field(
        default="",
        description="Where MLflow reaches this registry's POST /mlflow/webhook; set, the registry creates its "
        "webhook in MLflow at start-up for alias moves made by hand (the reconciler runs as well). Empty: none.",
    )
    webhook_secret: SecretStr | None = Field(
        default=None,
        description="HMAC secret of the webhook; unset: a random one, set in MLflow at each start "
        "(replicas of the registry need one shared secret).",
    )
    command_timeout_s: float = Field(
        default=20.0,
        gt=0,
        description="How long a promote, rollback or approve waits for the replica owning the model to carry it "
        "out; past it the request answers 503 and the command, expired, is refused if reached later.",
    )
    command_secret: SecretStr | None = Field(
        default=None,
        description="HMAC secret registry replicas sign their commands with (registry.commands); a command not "
        "signed with it is dead-lettered. Unset: a random one per start, which serves one replica alone "
        "(replicas need one shared secret).",
    )
    history_kept: int = Field(default=30, ge=1, description="Champion moves kept per model.")
