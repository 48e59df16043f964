"""Unit tests' side of the one join: logged answers and a label in, the labelled prediction out."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from flywheel.monitoring.join import LabelJoin
from flywheel.schemas import LabelObserved, PredictionLabelled, PredictionMade


def labelled(logged: Iterable[PredictionMade], label: Any, prediction_id: str | None = None) -> PredictionLabelled:
    """``label`` joined (as monitoring's join does) to the served answer among ``logged`` and its shadows."""
    join = LabelJoin()
    answers = list(logged)
    for answer in answers:
        join.remember(answer)
    named = prediction_id or next(a.prediction_id for a in answers if a.served)
    first = answers[0]
    joined = join.join(LabelObserved(producer="t", dataset=first.dataset, label=label, prediction_id=named))
    assert joined is not None, f"no answer {named!r} among those logged"
    return joined
