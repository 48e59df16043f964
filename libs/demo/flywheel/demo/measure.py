"""How a scenario judges served answers: a classifier by its accuracy, a regressor by its mean absolute error.

One answer gives one outcome (right or wrong; the absolute error); a phase's figure is their mean.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Measure:
    """A figure of served answers and which way is better.

    >>> ACCURACY.outcome("1", 1), MAE.outcome(12.5, 10)
    (1.0, 2.5)
    >>> MAE.better(20.0, 35.0), ACCURACY.better(0.6, 0.8), MAE.show(12.345), ACCURACY.show(0.8123)
    (True, False, '12.35', '81.2%')
    """

    name: str
    lower_is_better: bool

    def outcome(self, prediction: Any, label: Any) -> float:
        """One answer's outcome: 1.0 when the class is right (else 0.0), or the absolute error."""
        if self.lower_is_better:
            return abs(float(prediction) - float(label))
        return float(str(prediction) == str(label) or _same_number(prediction, label))

    def of(self, outcomes: Sequence[float]) -> float | None:
        """The figure of a phase's outcomes; None without any."""
        return statistics.fmean(outcomes) if outcomes else None

    def better(self, value: float, than: float) -> bool:
        return value < than if self.lower_is_better else value > than

    def show(self, value: float | None) -> str:
        if value is None:
            return "n/a"
        return f"{value:.2f}" if self.lower_is_better else f"{value:.1%}"

    def trivial(self, labels: Sequence[Any]) -> float:
        """The figure of the trivial answer on ``labels``: always the majority class, or always their mean.

        >>> ACCURACY.trivial([0, 0, 1, 0]), MAE.trivial([1.0, 3.0])
        (0.75, 1.0)
        """
        if not labels:
            raise ValueError("no labels")
        if self.lower_is_better:
            mean = statistics.fmean(float(v) for v in labels)
            return statistics.fmean(abs(float(v) - mean) for v in labels)
        return max(list(labels).count(value) for value in set(labels)) / len(labels)


def _same_number(prediction: Any, label: Any) -> bool:
    try:
        return float(prediction) == float(label)
    except (TypeError, ValueError):
        return False


ACCURACY = Measure("accuracy", lower_is_better=False)
MAE = Measure("mae", lower_is_better=True)


def measure_of(task: str) -> Measure:
    """The measure of a model spec's task.

    >>> measure_of("regression").name, measure_of("classification").name
    ('mae', 'accuracy')
    """
    return MAE if task == "regression" else ACCURACY
