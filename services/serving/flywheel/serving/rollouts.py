"""Rollouts in progress, and how they are rebuilt from the ``models.rollout`` log after a restart.

Every step of a rollout is an event on ``models.rollout``, so the log is the durable state:
the last event per model says whether a rollout is still running (``started``, ``stepped``)
and at which step, or ended (``promoted``, ``rolled_back``, ``aborted``, ``inconclusive``). A restarted serving
folds the log and resumes each running rollout at its step from the figures its last event
carried; the labels joined since that event are read again from ``predictions.labelled``
(``catchup.py``), and a canary's step counts its answers afresh. It also rebuilds the bake
period of recent promotions.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from flywheel.schemas import Event, RolloutStepped
from flywheel.schemas.models import SequentialTest
from flywheel.serving.models import ServedModel
from flywheel.serving.rollout import VariantFigures
from flywheel.serving.sequential import Comparison

RUNNING = {"started", "stepped"}
ENDED = {"promoted", "rolled_back", "aborted", "inconclusive"}


@dataclass
class Rollout:
    """A candidate being rolled out against the champion."""

    model_name: str
    strategy: str
    candidate: ServedModel
    champion_version: str
    steps: list[float]
    cause: Event | None = None
    step: int = 0
    figures: dict[str, VariantFigures] = field(init=False)
    step_figures: VariantFigures = field(init=False)
    deciding: bool = False
    # the labels credited, by their ``labels`` event: the subscriber and a catch-up after a takeover may read one
    credited: set[str] = field(default_factory=set)
    slow_ms: float = 100.0
    started_at: float = field(default_factory=time.monotonic)  # a resumed rollout's clock runs on (driver.py)

    def __post_init__(self) -> None:
        self.figures = {"champion": self.new_figures(), "candidate": self.new_figures()}
        self.step_figures = self.new_figures()

    def carry_over(self, logged: dict[str, dict[str, float]]) -> None:
        """Start from the figures a ``models.rollout`` event carried (a rollout resumed after a restart)."""
        for variant in self.figures:
            figures = figures_from(logged.get(variant, {}))
            figures.task = self.candidate.task
            self.figures[variant] = figures

    def new_figures(self) -> VariantFigures:
        """Empty figures that keep what the candidate's answers are judged on (right answers, or errors)."""
        return VariantFigures(task=self.candidate.task)

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self.started_at

    @property
    def traffic(self) -> float:
        if self.strategy == "shadow":
            return 0.0
        return self.steps[min(self.step, len(self.steps) - 1)]

    def count(self, variant: str, n: int, errors: int = 0, latency_ms: float | None = None) -> None:
        """Add answers of a variant to the rollout's figures (and the candidate's to its step's)."""
        figures = self.figures[variant]
        figures.requests += n
        figures.errors += errors
        if latency_ms is not None:
            figures.record_latency(latency_ms, self.slow_ms)
        if variant == "candidate":
            self.step_figures.requests += n
            self.step_figures.errors += errors

    def event(
        self,
        action: str,
        reason: str,
        alpha: float,
        traffic: float | None = None,
        tests: dict[str, Comparison] | None = None,
    ) -> RolloutStepped:
        """The ``models.rollout`` event of this rollout now, caused by its previous one."""
        cause = self.cause
        return RolloutStepped(
            producer="serving",
            model_name=self.model_name,
            candidate_version=self.candidate.version,
            champion_version=self.champion_version,
            strategy=self.strategy,
            action=action,
            step=self.step,
            candidate_traffic=self.traffic if traffic is None else traffic,
            reason=reason,
            figures={k: v.as_dict() for k, v in self.figures.items()},
            tests={metric: as_test(c) for metric, c in (tests or {}).items()},
            alpha=alpha,
            elapsed_s=round(self.elapsed_s, 3),
            **(cause.caused() if cause else {}),
        )

    def describe(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "strategy": self.strategy,
            "candidate_version": self.candidate.version,
            "champion_version": self.champion_version,
            "step": self.step,
            "steps": self.steps,
            "candidate_traffic": self.traffic,
            "elapsed_s": round(self.elapsed_s, 1),
            "figures": {k: v.as_dict() for k, v in self.figures.items()},
        }


@dataclass
class RolloutLog:
    """What the ``models.rollout`` history says, folded: the last event per model, and every decided version.

    >>> from flywheel.schemas import RolloutStepped
    >>> def step(action, version="2", step=0):
    ...     return RolloutStepped(model_name="m", candidate_version=version, champion_version="1",
    ...                           strategy="canary", action=action, step=step)
    >>> folded = RolloutLog.fold([step("started"), step("stepped", step=1)])
    >>> [(e.action, e.step) for e in folded.running()]
    [('stepped', 1)]
    >>> folded = RolloutLog.fold([step("started"), step("rolled_back"), step("started", "3")])
    >>> sorted(folded.decided), [e.candidate_version for e in folded.running()]
    ([('m', '2')], ['3'])
    """

    last: dict[str, RolloutStepped] = field(default_factory=dict)
    decided: set[tuple[str, str]] = field(default_factory=set)

    @classmethod
    def fold(cls, events: Iterable[RolloutStepped]) -> RolloutLog:
        folded = cls()
        for event in events:
            folded.add(event)
        return folded

    def add(self, event: RolloutStepped) -> None:
        self.last[event.model_name] = event
        if event.action in ENDED:
            self.decided.add((event.model_name, event.candidate_version))

    def running(self) -> list[RolloutStepped]:
        return [e for e in self.last.values() if e.action in RUNNING]

    def promotions(self) -> list[RolloutStepped]:
        return [e for e in self.last.values() if e.action == "promoted"]


def figures_from(summary: dict[str, float]) -> VariantFigures:
    """A variant's figures as a rollout event carries them (no latencies: only their p99).

    A summary with ``mae`` is a regressor's: its absolute errors are rebuilt from their mean and spread.

    >>> figures_from({"requests": 10, "errors": 1, "labelled": 8, "correct": 6}).accuracy
    0.75
    >>> figures = figures_from({"labelled": 4, "mae": 2.0, "abs_error_sd": 1.1547005383792515})
    >>> figures.task, figures.mae, round(figures.abs_errors.variance, 6)
    ('regression', 2.0, 1.333333)
    """
    labelled = int(summary.get("labelled", 0))
    figures = VariantFigures(
        requests=int(summary.get("requests", 0)),
        errors=int(summary.get("errors", 0)),
        labelled=labelled,
        correct=int(summary.get("correct", round(summary.get("accuracy", 0) * labelled))),
        timed=int(summary.get("timed", 0)),
        slow=int(summary.get("slow", 0)),
    )
    if "mae" in summary:
        mae, sd = max(summary["mae"], 0.0), summary.get("abs_error_sd", 0.0)
        figures.task = "regression"
        figures.abs_error_sum = mae * labelled
        figures.abs_error_sq_sum = sd**2 * max(labelled - 1, 0) + labelled * mae**2
    return figures


def as_test(comparison: Comparison) -> SequentialTest:
    """A look of the sequential test as the rollout event carries it."""
    return SequentialTest(
        metric=comparison.metric,
        candidate=comparison.candidate,
        champion=comparison.champion,
        difference=comparison.difference,
        candidate_n=comparison.candidate_n,
        champion_n=comparison.champion_n,
        std_error=comparison.std_error,
        log_likelihood_ratio=comparison.log_likelihood_ratio,
        p_value=comparison.p_value,
        alpha=comparison.alpha,
        significant=comparison.significant,
    )
