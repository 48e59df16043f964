"""Answers and the label join: which variant answered what, credited when the label arrives."""

from __future__ import annotations

import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from flywheel.schemas import LabelObserved

# Prediction ids derive from the request id, so a request scored again after a redelivery
# logs the same prediction ids and every reader of ``predictions`` counts it once.
PREDICTION_IDS = uuid.UUID("5d8a4f53-8e5e-4bc5-9a55-2b3f4a8f0e61")
ROLES = ("served", "shadow")


def prediction_id(key: str | None, role: str) -> str:
    """The id of the answer in ``role`` (``served`` or ``shadow``) to the request with ``key``.

    >>> prediction_id("r1", "served") == prediction_id("r1", "served") != prediction_id("r1", "shadow")
    True
    """
    if key is None:
        return uuid.uuid4().hex
    return uuid.uuid5(PREDICTION_IDS, f"{key}/{role}").hex


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
    """Answers still waiting for their label: prediction id → model and each variant's prediction and version.

    The version travels with the answer: a label that arrives after a promotion credits the version
    that answered, not whichever model holds the variant's name by then.

    >>> pending = PendingAnswers(capacity=2)
    >>> pending.remember("p1", "m", {"champion": (1, "3"), "candidate": (0, "4")})
    >>> pending.take(LabelObserved(dataset="d", label=1, prediction_id="p1"))
    ('m', {'champion': (True, '3'), 'candidate': (False, '4')})
    >>> pending.take(LabelObserved(dataset="d", label=1, prediction_id="p1")) is None
    True
    """

    def __init__(self, capacity: int = 200_000) -> None:
        self._answers: OrderedDict[str, tuple[str, dict[str, tuple[Any, str]]]] = OrderedDict()
        self._capacity = capacity

    def remember(self, prediction_id: str, model_name: str, variants: dict[str, tuple[Any, str]]) -> None:
        self._answers[prediction_id] = (model_name, variants)
        if len(self._answers) > self._capacity:
            self._answers.popitem(last=False)

    def take(self, label: LabelObserved) -> tuple[str, dict[str, tuple[bool, str]]] | None:
        """The model a label is for, and per variant whether its answer was right and which version gave it."""
        if label.prediction_id is None or label.prediction_id not in self._answers:
            return None
        name, variants = self._answers.pop(label.prediction_id)
        return name, {
            variant: (str(predicted) == str(label.label), version) for variant, (predicted, version) in variants.items()
        }
