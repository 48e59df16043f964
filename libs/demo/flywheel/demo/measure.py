"""How a scenario judges served answers: a classifier by its accuracy, a regressor by its mean absolute error.

One answer gives one outcome (right or wrong; the absolute error); a phase's figure is their mean.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from flywheel.common.evaluation import answer_error, quality_metric


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

    def outcome(self, prediction: Any, label: Any) -> float | None:
        """One answer's outcome: 1.0 when the class is right (else 0.0), or the absolute error (``answer_error``);
        None when no error can be measured (a regressor's answer or label that is no number)."""
        error = answer_error("regression" if self.lower_is_better else "classification", prediction, label)
        if error is None or self.lower_is_better:
            return error
        return 1.0 - error

    def of(self, outcomes: Sequence[float | None]) -> float | None:
        """The figure of a phase's outcomes, those that could be measured; None without any."""
        measured = [o for o in outcomes if o is not None]
        return statistics.fmean(measured) if measured else None

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


ACCURACY = Measure("accuracy", lower_is_better=False)
MAE = Measure("mae", lower_is_better=True)


def measure_of(task: str) -> Measure:
    """The measure of a model spec's task (its ``quality_metric``).

    >>> measure_of("regression").name, measure_of("classification").name
    ('mae', 'accuracy')
    """
    return MAE if quality_metric(task) == MAE.name else ACCURACY
