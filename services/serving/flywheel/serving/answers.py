"""Answers, and how each fared when its label arrives (joined once, on ``predictions.labelled``)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from flywheel.common.evaluation import answer_error, number
from flywheel.schemas import PredictionLabelled, name_id, new_id

# Prediction ids derive from the request id, so a request scored again after a redelivery
# logs the same prediction ids and every reader of ``predictions`` counts it once.
PREDICTION_IDS = uuid.UUID("5d8a4f53-8e5e-4bc5-9a55-2b3f4a8f0e61")
Outcome = bool | float  # how an answer fared: a classifier's right or wrong, a regressor's absolute error


class UnusableLabel(ValueError):
    """A label that cannot judge the answers it is for (a regression model's label that is not a number)."""


def prediction_id(key: str | None, role: str) -> str:
    """The id of the answer in ``role`` (``served`` or ``shadow``) to the request with ``key``.

    >>> prediction_id("r1", "served") == prediction_id("r1", "served") != prediction_id("r1", "shadow")
    True
    """
    if key is None:
        return new_id().hex
    return name_id(PREDICTION_IDS, f"{key}/{role}").hex


def outcome(task: str, predicted: Any, label: Any) -> Outcome | None:
    """How an answer fared against its label: right or wrong for a classifier, the absolute error for a regressor
    (``answer_error``). None when a regressor's answer or label is no number (no error can be measured).

    >>> outcome("classification", 1, "1"), outcome("regression", 12.5, "10"), outcome("regression", None, 10)
    (True, 2.5, None)
    """
    error = answer_error(task, predicted, label)
    if error is None or task == "regression":
        return error
    return error == 0.0


@dataclass
class Answer:
    prediction_id: str
    request_id: str | None
    prediction: Any
    probability: float | None
    model_name: str
    model_version: str
    variant: str


def outcomes(labelled: PredictionLabelled, task: str) -> dict[str, tuple[Outcome, str]]:
    """Per variant, how its answer to a labelled request fared (``outcome``) and which version gave it.

    The version travels with the answer: a label that arrives after a promotion credits the version
    that answered, not whichever model holds the variant's name by then. A shadow answer is the
    candidate's. A variant whose answer cannot be measured (a regressor's missing value) is left out.
    Raises ``UnusableLabel`` for a regression model's label that is not a number.

    >>> from datetime import UTC, datetime
    >>> from flywheel.schemas import LabelledAnswer
    >>> def given(variant, version, prediction, served=True):
    ...     return LabelledAnswer(prediction_id=variant, variant=variant, served=served, model_version=version,
    ...         prediction=prediction, predicted_at=datetime(2026, 1, 1, tzinfo=UTC))
    >>> labelled = PredictionLabelled(producer="t", dataset="d", model_name="m", label=1, label_event_id=uuid.uuid4(),
    ...     answers=[given("champion", "3", 1), given("shadow", "4", 0, served=False)])
    >>> outcomes(labelled, "classification")
    {'champion': (True, '3'), 'candidate': (False, '4')}
    >>> priced = labelled.model_copy(update={"label": "10", "answers": [given("champion", "1", 12.5)]})
    >>> outcomes(priced, "regression")
    {'champion': (2.5, '1')}
    """
    if task == "regression" and number(labelled.label) is None:
        raise UnusableLabel(
            f"label {str(labelled.label)[:80]!r} of regression model {labelled.model_name!r} is not a number"
        )
    fared = {
        "candidate" if answer.variant == "shadow" else answer.variant: (
            outcome(task, answer.prediction, labelled.label),
            answer.model_version,
        )
        for answer in labelled.answers
    }
    return {variant: (result, version) for variant, (result, version) in fared.items() if result is not None}
