"""Concurrent requests for one model scored in one call: adaptive micro-batching.

A request joins its model's waiting batch, and the batch is scored once every request that was
ready to run by then has joined it. A lone request is scored at once, so an idle server waits
for nothing; a busy one calls the model once for the requests that came in while it was busy,
where most of a single record's cost is the call's own (a boosted ensemble walks its every tree
once per call, however many rows it is given). No timer: a batch is only as old as one turn of
the event loop.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Protocol

from flywheel.schemas import PredictionMade
from flywheel.serving.answers import Answer
from flywheel.serving.models import ServedModel

Scored = tuple[list[Answer], list[PredictionMade]]


class Score(Protocol):
    """``Engine.score``, as the batches call it."""

    def __call__(
        self,
        name: str,
        records: list[dict[str, Any]],
        request_ids: list[str],
        *,
        champion: ServedModel,
        count_failure: bool,
    ) -> Scored: ...


@dataclass
class _Waiting:
    records: list[dict[str, Any]]
    request_ids: list[str]
    answered: asyncio.Future[Scored] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class MicroBatches:
    """Scores concurrent requests checked by the same champion together with ``score`` (``Engine.score``), at
    most ``most`` records in one call; each request gets back its own answers and log entries, in its order.

    A batch whose call fails is scored again request by request, so a request whose records the model cannot
    score fails alone, as it would have without the others (and the champion's errors are counted once).
    """

    def __init__(self, score: Score, most: int) -> None:
        self._score = score
        self.most = most
        self._waiting: dict[tuple[str, int], tuple[ServedModel, list[_Waiting]]] = {}

    async def score(self, champion: ServedModel, records: list[dict[str, Any]], request_ids: list[str]) -> Scored:
        """The answers to ``records`` (ids ``request_ids``, unique), given by ``champion`` (the version that
        checked them, even if another serves by the time they are scored) or its rollout, and their log entries."""
        key = (champion.name, id(champion))
        if key not in self._waiting:  # scored after the requests already ready to run: they join this batch first
            self._waiting[key] = (champion, [])
            asyncio.get_running_loop().call_soon(self._flush, key)
        request = _Waiting(records, request_ids)
        self._waiting[key][1].append(request)
        return await request.answered

    def _flush(self, key: tuple[str, int]) -> None:
        champion, waiting = self._waiting.pop(key)
        batch: list[_Waiting] = []
        size = 0
        while waiting and (not batch or size + len(waiting[0].records) <= self.most):
            size += len(waiting[0].records)
            batch.append(waiting.pop(0))
        if waiting:  # the rest: the next batch, at once
            self._waiting[key] = (champion, waiting)
            asyncio.get_running_loop().call_soon(self._flush, key)
        batch = [request for request in batch if not request.answered.done()]  # a client gone: not scored
        try:
            self._answer(champion, batch)
        except Exception as exc:  # never a request left waiting
            for request in batch:
                if not request.answered.done():
                    request.answered.set_exception(exc)

    def _answer(self, champion: ServedModel, batch: list[_Waiting]) -> None:
        if not batch:
            return
        alone = len(batch) == 1
        try:
            answers, logged = self._score(
                champion.name,
                [record for request in batch for record in request.records],
                [rid for request in batch for rid in request.request_ids],
                champion=champion,
                count_failure=alone,
            )
        except Exception as exc:
            if alone:
                batch[0].answered.set_exception(exc)
            else:  # one request's records may be what the model cannot score: each on its own
                for request in batch:
                    self._answer(champion, [request])
            return
        owner = {rid: index for index, request in enumerate(batch) for rid in request.request_ids}
        if len(owner) != sum(len(request.request_ids) for request in batch):
            raise ValueError("request ids in a batch must be unique")
        theirs: list[Scored] = [([], []) for _ in batch]
        for answer in answers:
            theirs[owner[answer.request_id]][0].append(answer)
        for entry in logged:
            theirs[owner[entry.request_id]][1].append(entry)
        for request, scored in zip(batch, theirs, strict=True):
            request.answered.set_result(scored)
