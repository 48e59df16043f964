"""Concept drift and performance of a regressor on delayed labels: a streaming detector on its residuals."""

from __future__ import annotations

from flywheel.monitoring.concept import Detector, OutcomeStream


class ResidualStream(OutcomeStream):
    """Whether a regressor's recent answers are further off than before.

    Each label joined to its prediction adds the absolute residual |prediction - label| to a
    rolling MAE (in the label's units) and, divided by ``scale`` (the champion's training MAE),
    to a river detector (Page-Hinkley watching for an increase, or ADWIN). In units of its
    training MAE a model's residuals average about 1 whatever the label measures (kWh, dollars,
    degrees), so one threshold means the same on every dataset. They are clipped at ``clip``
    training MAEs so that one wild label (a typo in a price) cannot fire the detector alone.

    Parameters
    ----------
    scale
        The champion's training MAE (out-of-time). None or not positive: the rolling MAE is
        kept, but no drift is detected, for there is no unit to judge the residuals in.
    ph_threshold, ph_delta
        Page-Hinkley's, in training MAEs. Tuned on the absolute values of normal, Laplace, t(3)
        and lognormal residuals: about 2 false alarms per 100,000 labels (the classifier's
        error stream at 6% errors: 4), a doubled MAE detected after 25 to 95 labels.

    >>> import random
    >>> rng = random.Random(0)
    >>> stream = ResidualStream(scale=0.8)  # the mean of |N(0, 1)|
    >>> stable = [stream.update(abs(rng.gauss(0, 1))) for _ in range(3000)]
    >>> any(stable), round(stream.mae, 1)
    (False, 0.8)
    >>> after = [stream.update(abs(rng.gauss(0, 2))) for _ in range(300)]
    >>> after.index(True) < 100
    True
    """

    figure = "mae"

    def __init__(
        self,
        scale: float | None,
        detector: Detector = "page_hinkley",
        window: int = 500,
        ph_threshold: float = 30.0,
        ph_delta: float = 0.15,
        adwin_delta: float = 0.002,
        clip: float = 4.0,
    ) -> None:
        super().__init__(detector, window, ph_threshold, ph_delta, adwin_delta)
        self.scale = scale if scale is not None and scale > 0 else None
        self.clip = clip

    def update(self, residual: float) -> bool:
        """Add one absolute residual; True when the detector signals drift (it then starts afresh)."""
        signal = None if self.scale is None else min(residual / self.scale, self.clip)
        return self._add(residual, signal)

    @property
    def mae(self) -> float | None:
        """Mean absolute error over the rolling window, in the label's units; None before any label."""
        return self._mean()

    @property
    def value(self) -> float | None:
        """The rolling figure (``figure``): MAE."""
        return self.mae
