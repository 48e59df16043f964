"""Model specs: a dataset's declarative recipe for a model (``datasets/<dataset>/model.yaml``).

A spec names the model, its dataset and feature set, the label, and the estimator: a
scikit-learn or river class (an import path and params, optionally behind preprocessing
steps). The trainer builds the estimator from it; nothing about a dataset is hard-coded.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import itertools
import operator
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, JsonValue, field_validator, model_validator

from flywheel.common.online import is_river, online

DEFAULT_SPEC = "model"


class EstimatorSpec(BaseModel):
    """One step, scikit-learn's or river's: its import path and constructor params."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    path: str = Field(
        description="Import path: sklearn.ensemble.HistGradientBoostingClassifier, river.linear_model.LinearRegression…"
    )
    params: dict[str, JsonValue] = {}

    def build(self, seed: int | None = None) -> Any:
        """Instantiate the step; ``seed`` fills ``random_state`` when the class takes one."""
        module, _, attr = self.path.rpartition(".")
        if not module:
            raise ValueError(f"estimator path {self.path!r} is not a dotted import path")
        cls = getattr(importlib.import_module(module), attr)
        params = dict(self.params)
        takes = inspect.signature(cls).parameters
        key = next((k for k in ("random_state", "seed") if k in takes), None)  # scikit-learn's, river's
        if seed is not None and key and key not in params:
            params[key] = seed
        return cls(**params)


class TrainingWindow(BaseModel):
    """Which labelled rows a run trains on, in rows and in the data's own (event) time.

    The rows come from the requested dataset version (default: the newest) and every version
    before it in its chain (``parent_version``); without bounds that is everything. The bounds
    apply in this order: ``since``, ``max_age`` (from the newest row's event time), then the
    newest ``max_rows``. ``half_life`` down-weights old rows instead of dropping them.

    >>> TrainingWindow(max_age="P30D", max_rows=5000).max_age.days
    30
    >>> TrainingWindow().bounded
    False
    """

    model_config = ConfigDict(extra="forbid")

    since: AwareDatetime | None = Field(default=None, description="Rows whose event time is at or after this.")
    max_age: timedelta | None = Field(
        default=None, description="Rows within this of the newest row's event time (ISO 8601, e.g. P30D)."
    )
    max_rows: int | None = Field(default=None, ge=2, description="The newest N labelled rows (after the above).")
    half_life: timedelta | None = Field(
        default=None,
        description="Weight each training row 0.5 ** (age / half_life), age from the newest row; None: equal weights.",
    )
    on_drift: Literal["keep", "after_drift"] = Field(
        default="keep",
        description="A drift retrain: keep the pre-drift rows (keep) or train on rows ingested after the drift only.",
    )

    @property
    def bounded(self) -> bool:
        return any(v is not None for v in (self.since, self.max_age, self.max_rows))


class EvaluationSpec(BaseModel):
    """How a run is judged: out of time, on the latest rows it never trained on.

    >>> EvaluationSpec().holdout is None, EvaluationSpec(holdout=0.2).before_holdout
    (True, 0.1)
    """

    model_config = ConfigDict(extra="forbid")

    holdout: float | None = Field(
        default=None, gt=0, lt=1, description="The latest fraction of the window, by event time; None: test_size."
    )
    before_holdout: float = Field(
        default=0.1, gt=0, lt=1, description="A drift retrain: this fraction of the pre-drift rows, held out."
    )


GateMetric = Literal[
    "accuracy", "balanced_accuracy", "precision", "recall", "f1", "roc_auc", "log_loss", "rmse", "mae", "r2"
]
PrimaryMetric = Literal["accuracy", "balanced_accuracy", "f1", "roc_auc", "log_loss", "rmse", "mae", "r2"]
Task = Literal["classification", "regression"]
REGRESSION_METRICS = ("rmse", "mae", "r2")  # a regressor's gate metrics; every other is a classifier's


class GateSpec(BaseModel):
    """The registry's quality gates for this model; a field left unset takes the registry's setting.

    Every figure is the candidate's on its out-of-time slice (the latest part of its window,
    which it never trained on); ``log_loss``, ``rmse`` and ``mae`` are better lower, every other
    metric higher. Regression models take ``rmse``, ``mae`` and ``r2``; classifiers the others.

    >>> GateSpec(primary_metric="balanced_accuracy", thresholds={"roc_auc": 0.7}).baseline_margin is None
    True
    """

    model_config = ConfigDict(extra="forbid")

    primary_metric: PrimaryMetric | None = Field(
        default=None, description="The metric the candidate is judged on against the baseline and the champion."
    )
    thresholds: dict[GateMetric, float] | None = Field(
        default=None, description="Absolute gates: metric >= value (log_loss, rmse, mae: <= value); {} for none."
    )
    baseline_margin: float | None = Field(
        default=None,
        description="Must beat the trivial baseline (majority class; regression: the mean) by this on the primary "
        "metric; for rmse and mae a fraction of the baseline's error (0.01: 1% lower).",
    )
    min_improvement: float | None = Field(
        default=None,
        description="Must reach the champion's primary metric plus this (negative: a tolerance); for rmse and mae "
        "a fraction of the champion's error.",
    )
    before_tolerance: float | None = Field(
        default=None,
        ge=0,
        description="On the slice from before a drift, may be this much worse than the champion (rmse, mae: a "
        "fraction of its error).",
    )


class RolloutSpec(BaseModel):
    """How serving rolls out this model's approved candidates; a field left unset takes serving's setting.

    A model whose labels come slowly (one record a day) needs a larger first canary step to gather,
    while the data last, the labels a significant decision takes.

    >>> RolloutSpec(canary_steps=[0.5, 1.0]).strategy is None
    True
    >>> RolloutSpec(canary_steps=[0.5, 0.25])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    pydantic_core._pydantic_core.ValidationError: 1 validation error for RolloutSpec
    canary_steps
      Value error, canary steps must rise and end at 1.0, not [0.5, 0.25] ...
    """

    model_config = ConfigDict(extra="forbid")

    strategy: Literal["shadow", "canary", "ab", "blue_green"] | None = Field(
        default=None, description="The rollout strategy for this model's candidates."
    )
    canary_steps: list[float] | None = Field(default=None, description="Candidate traffic per canary step, to 1.0.")
    ab_split: float | None = Field(default=None, gt=0, lt=1, description="Candidate share in an A/B rollout.")

    @field_validator("canary_steps")
    @classmethod
    def _rising_to_all(cls, steps: list[float] | None) -> list[float] | None:
        rising = steps is not None and all(a < b for a, b in itertools.pairwise([0.0, *steps]))
        if steps is not None and not (rising and steps and steps[-1] == 1.0):
            raise ValueError(f"canary steps must rise and end at 1.0, not {steps}")
        return steps


class OnlineChallengerSpec(BaseModel):
    """An online model that learns beside the batch champion from labelled answers, one at a time, and is
    proposed as a candidate when a concept drift leaves the champion behind (training's ``challenger``).

    On a concept drift of the model, a fresh learner starts from the last ``backfill_rows`` labelled rows and
    learns every label that follows. From ``min_rows`` on, every ``held_out`` rows a frozen copy is taken and
    judged on the next ``held_out`` rows, which it never learnt. A copy that beats, by the registry's primary
    metric, both the answers the champion served for them by ``margin`` and the trivial baseline by what the
    registry's gate asks is logged as a candidate: the registry gates it and serving rolls it out like any
    candidate. The learner learns on; once a snapshot's rollout ended, a better one may follow. The episode
    ends when the drift's batch retrain arrives (which takes over from a snapshot champion: ``batch_takes_over``),
    after ``max_candidates`` or after ``max_s``: without a concept drift a healthy champion is never churned.

    >>> OnlineChallengerSpec(estimator={"path": "river.tree.HoeffdingTreeClassifier"}).held_out
    100
    """

    model_config = ConfigDict(extra="forbid")

    estimator: EstimatorSpec = Field(description="A river estimator: river.tree.HoeffdingTreeClassifier…")
    pipeline: list[EstimatorSpec] = Field(default=[], description="River transformers before the estimator.")
    backfill_rows: int = Field(default=100, ge=0, description="Labelled rows from before the drift learnt first.")
    min_rows: int = Field(default=150, ge=1, description="Rows a candidate must have learnt.")
    held_out: int = Field(default=100, ge=10, description="Rows a frozen copy is judged on, never learnt by it.")
    margin: float = Field(
        default=0.02, ge=0, description="Must beat the served answers by this (accuracy; MAE: a fraction)."
    )
    max_candidates: int = Field(default=5, ge=1, description="Candidates proposed per drift at most.")
    max_s: float = Field(default=300.0, gt=0, description="An episode ends this long after its drift.")
    batch_takes_over: bool = Field(
        default=True,
        description="A batch retrain the registry gated not worse than an online snapshot champion replaces it "
        "blue-green (serving's bake guard rolls it back if it does worse); False: it must prove itself better "
        "in the model's rollout, like any candidate.",
    )

    @field_validator("estimator")
    @classmethod
    def _river(cls, estimator: EstimatorSpec) -> EstimatorSpec:
        if not is_river(estimator.path):
            raise ValueError(f"an online challenger learns one row at a time: a river estimator, not {estimator.path}")
        return estimator


class ModelSpec(BaseModel):
    """How to train a model on a dataset.

    >>> spec = ModelSpec(model_name="m", dataset="d", label="y",
    ...     estimator={"path": "sklearn.linear_model.LogisticRegression", "params": {"C": 1.0}})
    >>> spec.with_overrides({"C": 0.5, "seed": 7}).estimator.params, spec.with_overrides({"seed": 7}).seed
    ({'C': 0.5}, 7)
    >>> type(spec.build()).__name__
    'LogisticRegression'
    """

    model_config = ConfigDict(extra="forbid")

    model_name: str
    dataset: str
    feature_set: str | None = Field(default=None, description="Must match features.yaml; None: whatever it names.")
    label: str
    task: Task = Field(
        default="classification", description="classification (classes, probabilities) or regression (a value)."
    )
    estimator: EstimatorSpec
    pipeline: list[EstimatorSpec] = Field(default=[], description="Preprocessing steps before the estimator.")
    seed: int = 42
    test_size: float = Field(
        default=0.25, gt=0, lt=1, description="Held-out fraction for evaluation (evaluation.holdout wins when set)."
    )
    min_rows: int = Field(default=50, ge=2, description="Fewer labelled rows than this fail the run.")
    shuffle_labels: bool = Field(default=False, description="Testing only: a deliberately useless model.")
    spec_name: str = Field(default=DEFAULT_SPEC, description="The spec's file stem; set by the loader.")
    window: TrainingWindow = Field(default_factory=TrainingWindow, description="The rows a run trains on.")
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec, description="The out-of-time evaluation.")
    gates: GateSpec = Field(default_factory=GateSpec, description="How the registry gates this model's candidates.")
    rollout: RolloutSpec = Field(default_factory=RolloutSpec, description="How serving rolls its candidates out.")
    online_challenger: OnlineChallengerSpec | None = Field(
        default=None, description="An online model learning beside the champion, proposed after a concept drift."
    )

    @model_validator(mode="before")
    @classmethod
    def _retired(cls, data: Any) -> Any:
        if isinstance(data, dict) and "window_versions" in data:
            raise ValueError(
                "window_versions is retired (a count of versions is no size in rows or time): "
                "declare window: {max_rows: N} or {max_age: P30D} instead (docs/extending.md)"
            )
        return data

    @model_validator(mode="after")
    def _gates_fit_task(self) -> ModelSpec:
        named = {self.gates.primary_metric, *(self.gates.thresholds or {})} - {None}
        wrong = sorted(m for m in named if (m in REGRESSION_METRICS) != (self.task == "regression"))
        if wrong:
            raise ValueError(f"gate metrics {wrong} do not fit a {self.task} model")
        return self

    @property
    def holdout(self) -> float:
        """The out-of-time held-out fraction."""
        return self.evaluation.holdout if self.evaluation.holdout is not None else self.test_size

    def build(self) -> Any:
        """The estimator, or a Pipeline of the steps and the estimator, seeded.

        A river estimator (``river.…``) comes as an online model: its steps composed into a river
        pipeline, wrapped to learn row by row behind scikit-learn's methods (``flywheel.common.online``).

        >>> spec = ModelSpec(model_name="m", dataset="d", label="y",
        ...     pipeline=[{"path": "river.preprocessing.StandardScaler"}],
        ...     estimator={"path": "river.linear_model.LogisticRegression"})
        >>> built = spec.build()
        >>> type(built).__name__, str(built.river_estimator)
        ('OnlineClassifier', 'StandardScaler | LogisticRegression')
        """
        final = self.estimator.build(self.seed)
        if is_river(self.estimator.path):
            steps = [step.build(self.seed) for step in self.pipeline]
            if not all(is_river(step.path) for step in self.pipeline):
                raise ValueError("a river estimator's pipeline steps must be river transformers too")
            return online(functools.reduce(operator.or_, [*steps, final]), self.task)
        if not self.pipeline:
            return final
        from sklearn.pipeline import Pipeline

        steps = [(s.name or f"step{i}", s.build(self.seed)) for i, s in enumerate(self.pipeline)]
        return Pipeline([*steps, (self.estimator.name or "estimator", final)])

    def challenger(self) -> ModelSpec:
        """The online challenger's own spec: this one with its estimator and pipeline (no challenger of its own).

        >>> spec = ModelSpec(model_name="m", dataset="d", label="y",
        ...     estimator={"path": "sklearn.tree.DecisionTreeClassifier"},
        ...     online_challenger={"estimator": {"path": "river.tree.HoeffdingTreeClassifier"}})
        >>> type(spec.challenger().build()).__name__, spec.challenger().online_challenger
        ('OnlineClassifier', None)
        """
        if self.online_challenger is None:
            raise ValueError(f"model spec {self.spec_name!r} keeps no online challenger")
        online = self.online_challenger
        return self.model_copy(
            update={"estimator": online.estimator, "pipeline": online.pipeline, "online_challenger": None}
        )

    def with_overrides(self, params: dict[str, JsonValue]) -> ModelSpec:
        """A copy with a request's params: spec fields by name, anything else an estimator param."""
        if not params:
            return self
        own = {
            k: v for k, v in params.items() if k in (*type(self).model_fields, "window_versions") and k != "estimator"
        }
        estimator_params = {k: v for k, v in params.items() if k not in own}
        estimator = self.estimator.model_copy(update={"params": {**self.estimator.params, **estimator_params}})
        data = {**self.model_dump(), **own, "estimator": estimator.model_dump()}
        return type(self).model_validate(data)


def spec_path(datasets_dir: Path, dataset: str, spec: str | None = None) -> Path:
    name = spec or DEFAULT_SPEC
    if "/" in name or "\\" in name or name.startswith("."):
        raise ValueError(f"model spec {name!r} must be a plain name in datasets/{dataset}/")
    return Path(datasets_dir) / dataset / f"{name.removesuffix('.yaml')}.yaml"


def load_model_spec(datasets_dir: Path, dataset: str, spec: str | None = None) -> ModelSpec:
    """The spec ``<datasets_dir>/<dataset>/<spec or 'model'>.yaml``."""
    path = spec_path(datasets_dir, dataset, spec)
    if not path.exists():
        raise FileNotFoundError(f"no model spec {spec or DEFAULT_SPEC!r} for dataset {dataset!r} at {path}")
    data = yaml.safe_load(path.read_text()) or {}
    loaded = ModelSpec.model_validate({**data, "spec_name": path.stem})
    if loaded.dataset != dataset:
        raise ValueError(f"model spec {path} is for dataset {loaded.dataset!r}, not {dataset!r}")
    return loaded
