"""Concept drift and performance on delayed labels: a streaming detector on the error stream."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Literal

from river import drift
from river.base import DriftDetector

Detector = Literal["page_hinkley", "adwin"]


def detector_factory(
    detector: Detector, ph_threshold: float, ph_delta: float, adwin_delta: float
) -> Callable[[], DriftDetector]:
    """How to make a fresh detector (one starts afresh after each drift): Page-Hinkley watching for a rise, or ADWIN."""
    if detector == "page_hinkley":
        return lambda: drift.PageHinkley(min_instances=30, delta=ph_delta, threshold=ph_threshold, mode="up")
    return lambda: drift.ADWIN(delta=adwin_delta, clock=1)


class OutcomeStream:
    """One number per labelled answer: a rolling window of them, and a river detector on a signal of them.

    The two kinds below say what the number is (a 0/1 error, an absolute residual) and what the
    detector sees; the window, the detector's restart after a drift and the counts are shared.
    """

    figure = ""  # what its window tells: the figure a model's alert judges

    def __init__(
        self, detector: Detector, window: int, ph_threshold: float, ph_delta: float, adwin_delta: float
    ) -> None:
        self._make = detector_factory(detector, ph_threshold, ph_delta, adwin_delta)
        self.detector_name = detector
        self._detector = self._make()
        self._recent: deque[float] = deque(maxlen=window)
        self.seen = 0

    def _add(self, outcome: float, signal: float | None) -> bool:
        """Remember ``outcome``; feed ``signal`` to the detector (None: nothing to judge it in). True on drift."""
        self.seen += 1
        self._recent.append(outcome)
        if signal is None:
            return False
        self._detector.update(signal)
        if self._detector.drift_detected:
            self._detector = self._make()
            return True
        return False

    def reset(self) -> None:
        self._detector = self._make()
        self._recent.clear()
        self.seen = 0

    def _mean(self) -> float | None:
        return sum(self._recent) / len(self._recent) if self._recent else None

    @property
    def window_size(self) -> int:
        return len(self._recent)


class ErrorStream(OutcomeStream):
    """Whether the model's recent answers are wrong more often than before.

    Each label joined to its prediction adds one 0/1 error to a river detector
    (Page-Hinkley watching for an increase, or ADWIN) and to a rolling accuracy.

    >>> import random
    >>> rng = random.Random(0)
    >>> stream = ErrorStream()
    >>> stable = [stream.update(rng.random() < 0.06) for _ in range(3000)]
    >>> any(stable)
    False
    >>> after = [stream.update(rng.random() < 0.45) for _ in range(200)]
    >>> after.index(True) < 60
    True
    """

    figure = "accuracy"

    def __init__(
        self,
        detector: Detector = "page_hinkley",
        window: int = 500,
        ph_threshold: float = 12.0,
        ph_delta: float = 0.02,
        adwin_delta: float = 0.002,
    ) -> None:
        super().__init__(detector, window, ph_threshold, ph_delta, adwin_delta)

    def update(self, wrong: float) -> bool:
        """Add one outcome (1 wrong, 0 right); True when the detector signals drift (it then starts afresh)."""
        return self._add(int(wrong), int(wrong))

    @property
    def accuracy(self) -> float | None:
        """Accuracy over the rolling window; None before any label."""
        errors = self._mean()
        return None if errors is None else 1 - errors

    @property
    def value(self) -> float | None:
        """The rolling figure (``figure``): accuracy."""
        return self.accuracy
