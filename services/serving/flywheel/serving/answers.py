"""Answers and the label join: which variant answered what, credited when the label arrives."""

from __future__ import annotations

import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from flywheel.common.evaluation import answer_error, number
from flywheel.schemas import LabelObserved

# Prediction ids derive from the request id, so a request scored again after a redelivery
# logs the same prediction ids and every reader of ``predictions`` counts it once.
PREDICTION_IDS = uuid.UUID("5d8a4f53-8e5e-4bc5-9a55-2b3f4a8f0e61")
ROLES = ("served", "shadow")
Outcome = bool | float  # how an answer fared: a classifier's right or wrong, a regressor's absolute error


class UnusableLabel(ValueError):
    """A label that cannot judge the answers it is for (a regression model's label that is not a number)."""


def prediction_id(key: str | None, role: str) -> str:
    """The id of the answer in ``role`` (``served`` or ``shadow``) to the request with ``key``.

    >>> prediction_id("r1", "served") == prediction_id("r1", "served") != prediction_id("r1", "shadow")
    True
    """
    if key is None:
        return uuid.uuid4().hex
    return uuid.uuid5(PREDICTION_IDS, f"{key}/{role}").hex


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


class PendingAnswers:
    """Answers waiting for their label: prediction id → model, its task, each variant's prediction and version.

    The version travels with the answer: a label that arrives after a promotion credits the version
    that answered, not whichever model holds the variant's name by then.

    >>> pending = PendingAnswers(capacity=2)
    >>> pending.remember("p1", "m", {"champion": (1, "3"), "candidate": (0, "4")})
    >>> pending.take(LabelObserved(dataset="d", label=1, prediction_id="p1"))
    ('m', {'champion': (True, '3'), 'candidate': (False, '4')})
    >>> pending.take(LabelObserved(dataset="d", label=1, prediction_id="p1")) is None
    True
    >>> pending.remember("p2", "price", {"champion": (12.5, "1"), "candidate": (9.0, "2")}, task="regression")
    >>> pending.take(LabelObserved(dataset="d", label="10", prediction_id="p2"))
    ('price', {'champion': (2.5, '1'), 'candidate': (1.0, '2')})
    """

    def __init__(self, capacity: int = 200_000) -> None:
        self._answers: OrderedDict[str, tuple[str, str, dict[str, tuple[Any, str]]]] = OrderedDict()
        self._capacity = capacity

    def remember(
        self, prediction_id: str, model_name: str, variants: dict[str, tuple[Any, str]], task: str = "classification"
    ) -> None:
        self._answers[prediction_id] = (model_name, task, variants)
        if len(self._answers) > self._capacity:
            self._answers.popitem(last=False)

    def take(self, label: LabelObserved) -> tuple[str, dict[str, tuple[Outcome, str]]] | None:
        """The model a label is for, and per variant how its answer fared (``outcome``) and which version gave it.

        A variant whose answer cannot be measured (a regressor's missing value) is left out. Raises
        ``UnusableLabel`` for a regression model's label that is not a number; its answer is forgotten.
        """
        if label.prediction_id is None or label.prediction_id not in self._answers:
            return None
        name, task, variants = self._answers.pop(label.prediction_id)
        if task == "regression" and number(label.label) is None:
            raise UnusableLabel(f"label {str(label.label)[:80]!r} of regression model {name!r} is not a number")
        outcomes = {
            variant: (outcome(task, predicted, label.label), version)
            for variant, (predicted, version) in variants.items()
        }
        return name, {variant: fared for variant, fared in outcomes.items() if fared[0] is not None}
