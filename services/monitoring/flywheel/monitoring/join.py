"""The one join of ``predictions`` and ``labels``: a late label meets the answers given for it.

Both topics are keyed by entity, so a label and the answers it is for lie on one partition number of
each, and the join's consumer (``subscribers.py``) gets the same partition numbers of both. A label names
its prediction, or only its entity (then the entity's latest served answer is the one it judges). The
joined event carries every answer given to that request: the served one and a shadow candidate's.
Serving's rollout judge and guard and monitoring's error stream all read it, so none joins again.

Pure state: the subscriber does the I/O and rebuilds this from ``predictions`` after a restart.

>>> from datetime import UTC, datetime
>>> join = LabelJoin()
>>> at = datetime(2026, 1, 1, tzinfo=UTC)
>>> def answer(pid, variant="champion", served=True):
...     return PredictionMade(producer="s", dataset="d", prediction_id=pid, request_id="r1", entity_id="e1",
...         model_name="m", model_version="2" if served else "3", variant=variant, served=served,
...         prediction=1, latency_ms=1.0, occurred_at=at)
>>> join.remember(answer("p1")), join.remember(answer("p1s", "shadow", served=False))
([], [])
>>> joined = join.join(LabelObserved(dataset="d", label=1, prediction_id="p1"))
>>> [(a.variant, a.model_version) for a in joined.answers], joined.model_name
([('champion', '2'), ('shadow', '3')], 'm')
>>> join.join(LabelObserved(dataset="d", label=1, prediction_id="p1")) is None  # joined once
True
>>> early = LabelObserved(dataset="d", label=0, prediction_id="p2")  # before its prediction was read
>>> join.join(early) is None, [j.label for j in join.remember(answer("p2"))]
(True, [0])
>>> _ = join.remember(answer("p3"))
>>> join.join(LabelObserved(dataset="d", label=1, entity_id="e1")).answers[0].prediction_id  # by entity
'p3'
"""

from __future__ import annotations

import time
from collections import OrderedDict
from datetime import datetime
from typing import Any, NamedTuple

import structlog

from flywheel.common.kafka import derived_id
from flywheel.schemas import LabelledAnswer, LabelObserved, PredictionLabelled, PredictionMade

log = structlog.get_logger(__name__)


class LabelJoin:
    """Answers waiting for their label, and labels that came before their answer (for ``wait_s``)."""

    def __init__(self, capacity: int = 200_000, wait_s: float = 60.0) -> None:
        self.capacity, self.wait_s = capacity, wait_s
        self._answers: OrderedDict[str, Held] = OrderedDict()  # by prediction id
        self._shadows: dict[str, list[str]] = {}  # request id -> the shadow answers' prediction ids
        self._latest: dict[tuple[str, str], str] = {}  # (dataset, entity) -> its latest served answer
        # labels read before their answer, by the prediction id they name or else by (dataset, entity)
        self._early: OrderedDict[str | tuple[str, str], tuple[LabelObserved, float]] = OrderedDict()
        self.joined = 0
        self.given_up = 0  # labels whose answer never came within ``wait_s`` (or that memory let go)

    @property
    def held(self) -> int:
        """Answers remembered for their label (not ``__len__``: an empty join must not be falsy)."""
        return len(self._answers)

    @property
    def waiting(self) -> int:
        return len(self._early)

    def remember(self, prediction: PredictionMade, now: float | None = None) -> list[PredictionLabelled]:
        """Keep an answer for its label; the join of a label that came before it, if one did."""
        self._answers[prediction.prediction_id] = Held.of(prediction)
        if not prediction.served and prediction.request_id is not None:
            self._shadows.setdefault(prediction.request_id, []).append(prediction.prediction_id)
        elif prediction.entity_id is not None:
            self._latest[(prediction.dataset, prediction.entity_id)] = prediction.prediction_id
        while len(self._answers) > self.capacity:
            self._forget(next(iter(self._answers)))
        self._expire(now)
        early = self._early.pop(prediction.prediction_id, None)
        if early is None and prediction.served and prediction.entity_id is not None:
            early = self._early.pop((prediction.dataset, prediction.entity_id), None)
            if early is not None and (early[0].observed_at or prediction.occurred_at) < prediction.occurred_at:
                early = None  # the outcome was observed before this answer: it judges an older one, not known here
        if early is None:
            return []
        joined = self.join(early[0], now)
        return [joined] if joined is not None else []

    def join(self, label: LabelObserved, now: float | None = None) -> PredictionLabelled | None:
        """The label joined to the answers for it; None when none is known yet (the label then waits ``wait_s``
        for the answer it names or, naming none, for its entity's next served answer)."""
        entity = (label.dataset, label.entity_id) if label.entity_id is not None else None
        named = label.prediction_id or (self._latest.get(entity) if entity else None)
        served = self._answers.get(named) if named else None
        if served is None:
            waits_for = label.prediction_id or entity
            if waits_for is not None:
                before = self._early.pop(waits_for, None)
                if before is not None and before[0].event_id != label.event_id:
                    self._give_up(before[0], "a later label of the same answer came")
                self._early[waits_for] = (label, _clock(now))
            return None
        shadows = self._shadows.get(served.request_id or "", [])
        answers = [served, *(self._answers[p] for p in shadows if p in self._answers)]
        for answer in answers:
            self._forget(answer.prediction_id)
        self.joined += 1
        joined = PredictionLabelled(
            producer="monitoring",
            dataset=served.dataset,
            model_name=served.model_name,
            label=label.label,
            label_event_id=label.event_id,
            request_id=served.request_id,
            entity_id=served.entity_id or label.entity_id,
            observed_at=label.observed_at,
            answers=[_answer(a) for a in answers],
            inputs=served.inputs or {},  # what an online challenger learns from (empty unless the model keeps one)
            **label.caused(),
        )
        return joined.model_copy(update={"event_id": derived_id(label, 0, joined)})

    def _forget(self, prediction_id: str) -> None:
        answer = self._answers.pop(prediction_id, None)
        if answer is None:
            return
        if not answer.served and answer.request_id is not None:
            shadows = self._shadows.get(answer.request_id, [])
            if prediction_id in shadows:
                shadows.remove(prediction_id)
            if not shadows:
                self._shadows.pop(answer.request_id, None)
        elif answer.entity_id is not None and self._latest.get((answer.dataset, answer.entity_id)) == prediction_id:
            del self._latest[(answer.dataset, answer.entity_id)]

    def _expire(self, now: float | None) -> None:
        """Labels that waited ``wait_s`` for an answer that never came: their answer was not logged, or is
        older than this join remembers."""
        deadline = _clock(now) - self.wait_s
        while self._early and (next(iter(self._early.values()))[1] < deadline or len(self._early) > self.capacity):
            label = self._early.popitem(last=False)[1][0]
            self._give_up(label, "its answer never came")

    def _give_up(self, label: LabelObserved, why: str) -> None:
        self.given_up += 1
        log.info("label not joined", why=why, label_event_id=str(label.event_id), waited_s=self.wait_s)


class Held(NamedTuple):
    """What the join keeps of an answer until its label comes: not its features. Of the 200,000 answers it
    holds, whole ones took ~1 GB (~5 KB each), each a model, its dicts and sets, all containers the garbage
    collector traverses at every full collection; a tuple of plain values is one small container."""

    prediction_id: str
    dataset: str
    model_name: str
    request_id: str | None
    entity_id: str | None
    served: bool
    variant: str
    model_version: str
    prediction: Any
    probability: float | None
    occurred_at: datetime
    inputs: dict[str, Any] | None  # None for none (an empty dict would be one more object per answer)

    @classmethod
    def of(cls, p: PredictionMade) -> Held:
        return cls(
            p.prediction_id,
            p.dataset,
            p.model_name,
            p.request_id,
            p.entity_id,
            p.served,
            p.variant,
            p.model_version,
            p.prediction,
            p.probability,
            p.occurred_at,
            p.inputs or None,
        )


def _answer(held: Held) -> LabelledAnswer:
    return LabelledAnswer(
        prediction_id=held.prediction_id,
        variant=held.variant,
        served=held.served,
        model_version=held.model_version,
        prediction=held.prediction,
        probability=held.probability,
        predicted_at=held.occurred_at,
    )


def _clock(now: float | None) -> float:
    return time.monotonic() if now is None else now
