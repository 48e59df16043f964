"""New data, as events: training hears of every sealed version and label batch on ``datasets.versioned``.

A drift retrain waits for labelled rows recorded after the drift; it waits here, woken by each
announcement of new data, instead of polling the object store. Every replica hears every
announcement (no consumer group), since any of them may be waiting.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict


class Arrivals:
    """Per dataset, a counter of announcements and a way to wait for the next one."""

    def __init__(self) -> None:
        self._changed: dict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self.heard: dict[str, int] = defaultdict(int)

    def announce(self, dataset: str) -> None:
        """New data of ``dataset`` was sealed: wake whoever waits for it."""
        self.heard[dataset] += 1
        self._changed[dataset].set()
        self._changed[dataset] = asyncio.Event()

    async def next(self, dataset: str, timeout_s: float, since: int) -> bool:
        """Wait for an announcement of ``dataset`` after the ``since``-th; False when ``timeout_s`` passed first.

        ``since`` is ``heard[dataset]`` read before the caller looked at the data: one that came while it
        looked returns at once instead of being missed.
        """
        if self.heard[dataset] != since:
            return True
        changed = self._changed[dataset]
        try:
            await asyncio.wait_for(changed.wait(), max(0.0, timeout_s))
        except TimeoutError:
            return False
        return True
