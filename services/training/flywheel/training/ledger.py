"""Which training requests are still open, and how far each partition's offset may be committed.

A request counts as done only when its run has ended (``training.completed`` or
``training.failed`` is published). Kafka commits one offset per partition, "everything
below is done", so a partition's commit point is its oldest open request, or, when none
is open, just past the newest message taken. Requests end out of order (two models on
one partition, a short run beside a long one): the commit point waits for the oldest.
Pure bookkeeping, no I/O.
"""

from __future__ import annotations

from collections import defaultdict


class Ledger:
    """Open requests by partition and offset; commit points that only move forward.

    >>> ledger = Ledger()
    >>> ledger.take(0, 5, "a"); ledger.take(0, 6, "b"); ledger.take(0, 7, None)  # 7: a duplicate
    >>> ledger.due()
    {0: 5}
    >>> ledger.committed({0: 5})
    >>> ledger.end(["b"]); ledger.due()  # b ended, a still open: nothing past 5 may be committed
    {}
    >>> ledger.end(["a"]); ledger.due()
    {0: 8}
    >>> ledger.committed({0: 8}); ledger.due()
    {}
    """

    def __init__(self) -> None:
        self._open: dict[int, dict[int, str]] = defaultdict(dict)
        self._next: dict[int, int] = {}
        self._committed: dict[int, int] = {}

    def take(self, partition: int, offset: int, request_id: str | None) -> None:
        """A message was taken: open under ``request_id``, or settled at once (None: duplicate, ended, bad)."""
        if request_id is not None:
            self._open[partition][offset] = request_id
        self._next[partition] = max(self._next.get(partition, 0), offset + 1)

    def end(self, request_ids: list[str]) -> None:
        """These requests' run has ended: every offset that carried them is done."""
        ended = set(request_ids)
        for offsets in self._open.values():
            for offset in [o for o, r in offsets.items() if r in ended]:
                del offsets[offset]

    def is_open(self, request_id: str) -> bool:
        return any(request_id in offsets.values() for offsets in self._open.values())

    def open_in(self, partitions: set[int]) -> list[str]:
        """The ids of the requests open in these partitions."""
        return sorted({r for p in partitions for r in self._open.get(p, {}).values()})

    def point(self, partition: int) -> int | None:
        """The offset the partition may be committed to (None: nothing taken yet)."""
        offsets = self._open.get(partition)
        if offsets:
            return min(offsets)
        return self._next.get(partition)

    def due(self) -> dict[int, int]:
        """Commit points that moved past what was committed."""
        points = {p: self.point(p) for p in self._next}
        return {p: o for p, o in points.items() if o is not None and o > self._committed.get(p, -1)}

    def committed(self, points: dict[int, int]) -> None:
        for partition, offset in points.items():
            self._committed[partition] = max(self._committed.get(partition, -1), offset)

    def drop(self, partitions: set[int]) -> None:
        """Partitions handed over: forget them (whoever gets them resumes from the committed offset)."""
        for partition in partitions:
            self._open.pop(partition, None)
            self._next.pop(partition, None)
            self._committed.pop(partition, None)
