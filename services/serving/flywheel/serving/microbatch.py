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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flywheel.schemas import PredictionMade
from flywheel.serving.answers import Answer

Scored = tuple[list[Answer], list[PredictionMade]]
Score = Callable[[str, list[dict[str, Any]], list[str]], Scored]


@dataclass
class _Waiting:
    records: list[dict[str, Any]]
    request_ids: list[str]
    answered: asyncio.Future[Scored] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class MicroBatches:
    """Scores each model's concurrent requests together with ``score`` (``Engine.score``), at most ``most``
    records in one call; each request gets back its own answers and log entries, in its order."""

    def __init__(self, score: Score, most: int) -> None:
        self._score = score
        self.most = most
        self._waiting: dict[str, list[_Waiting]] = {}

    async def score(self, name: str, records: list[dict[str, Any]], request_ids: list[str]) -> Scored:
        """The answers to ``records`` (ids ``request_ids``, unique) and their log entries."""
        waiting = self._waiting.setdefault(name, [])
        if not waiting:  # after the requests already ready to run: they join this batch first
            asyncio.get_running_loop().call_soon(self._flush, name)
        request = _Waiting(records, request_ids)
        waiting.append(request)
        return await request.answered

    def _flush(self, name: str) -> None:
        waiting = self._waiting.pop(name, [])
        batch: list[_Waiting] = []
        size = 0
        while waiting and (not batch or size + len(waiting[0].records) <= self.most):
            size += len(waiting[0].records)
            batch.append(waiting.pop(0))
        if waiting:  # the rest: the next batch, at once
            self._waiting[name] = waiting
            asyncio.get_running_loop().call_soon(self._flush, name)
        batch = [request for request in batch if not request.answered.done()]  # a client gone: not scored
        if batch:
            self._answer(name, batch)

    def _answer(self, name: str, batch: list[_Waiting]) -> None:
        try:
            answers, logged = self._score(
                name,
                [record for request in batch for record in request.records],
                [rid for request in batch for rid in request.request_ids],
            )
        except Exception as exc:  # the model failed: every request of the batch hears why
            for request in batch:
                request.answered.set_exception(exc)
            return
        owner = {rid: index for index, request in enumerate(batch) for rid in request.request_ids}
        theirs: list[Scored] = [([], []) for _ in batch]
        for answer in answers:
            theirs[owner[answer.request_id]][0].append(answer)
        for entry in logged:
            theirs[owner[entry.request_id]][1].append(entry)
        for request, scored in zip(batch, theirs, strict=True):
            request.answered.set_result(scored)
