"""The roller: validated records into dataset versions, exactly once across crashes and replicas.

It reads ``records.validated`` with its own consumer and never commits offsets to Kafka:
each manifest stores, per partition, the offset its dataset is sealed up to
(``source_offsets``). A dataset's checkpoint is the per-partition maximum over its
versions. When partitions are assigned, the roller resumes each from the smallest
checkpoint of any dataset and skips, per dataset, what that dataset already sealed. A
crash between writing a version and anything after it therefore neither loses nor
repeats a record: what was sealed is skipped, what was buffered is read again.

Replicas share the work through one consumer group (``group_id``), which is used only to
assign partitions. When partitions are revoked the roller drops its buffers instead of
sealing them: nothing buffered is in a checkpoint yet, so whoever is assigned the
partition next reads those records again from the checkpoint. Batches fetched before a
rebalance are discarded by generation. Any failure (Kafka, MinIO) makes the roller start
over from the checkpoints after a backoff: the restart path is the recovery path.

A validated record can still reach the topic twice (a crash after publishing it and before
committing its submission). The roller remembers the record ids of recent versions (loaded
from them, ``remember_rows`` at most) and seals each id once.

The same roller seals label batches from ``labels`` (a ``Source`` says what it reads and how
it seals). A label naming a record the records' roller does not know yet is held back, at
most ``wait_s``, then dead-lettered with the reason; a held label also holds its partition's
checkpoint back, so a restart reads it again (the labels sealed after it are skipped by id).
With replicas, a label's record may be sealed by another replica (the records' and the labels'
partitions are assigned by two groups, so apart): while labels are held, ``learn`` (the records'
roller reading the versions sealed since, ``Roller.learn``) runs every ``LEARN_EVERY_S``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from pydantic import ValidationError

from flywheel.common.contracts import DataContract, by_dataset
from flywheel.common.datasets import DatasetCatalog
from flywheel.common.kafka import SeenEvents, client_security
from flywheel.ingestion.metrics import BUFFERED, RECOVERIES, VERSIONS
from flywheel.ingestion.sources import RECORDS_SOURCE, Source, versioned_event
from flywheel.ingestion.versions import Buffered, Held, Waiting, merge_offsets
from flywheel.schemas import DatasetManifest, Event

log = structlog.get_logger(__name__)

Publish = Callable[[Event], Awaitable[None]]
LEARN_EVERY_S = 2.0
DeadLetter = Callable[[Any, str], Awaitable[None]]


class _Handover(ConsumerRebalanceListener):
    def __init__(self, roller: Roller, consumer: AIOKafkaConsumer) -> None:
        self.roller, self.consumer = roller, consumer

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self.roller.release()

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        await self.roller.claim(self.consumer, assigned)


class Roller:
    def __init__(
        self,
        catalog: DatasetCatalog,
        contracts: dict[str, DataContract],
        publish: Publish,
        bootstrap_servers: str,
        *,
        bucket: str,
        max_rows: int,
        max_age_s: float,
        group_id: str = "flywheel-ingestion-roller",
        session_timeout_ms: int = 10_000,
        max_backoff_s: float = 30.0,
        remember_rows: int = 1_000_000,
        source: Source = RECORDS_SOURCE,
        ready: Callable[[Any], bool] | None = None,
        wait_s: float = 600.0,
        dead_letter: DeadLetter | None = None,
        learn: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.catalog, self.contracts, self.publish = catalog, contracts, publish
        self.bootstrap_servers, self.bucket, self.group_id = bootstrap_servers, bucket, group_id
        self.max_rows, self.max_age_s = max_rows, max_age_s
        self.session_timeout_ms, self.max_backoff_s = session_timeout_ms, max_backoff_s
        self.remember_rows = remember_rows
        self.source, self.ready, self.wait_s, self.dead_letter = source, ready, wait_s, dead_letter
        self.learn_more, self._learnt = learn, 0.0
        self.sealed: dict[str, SeenEvents] = {name: SeenEvents(capacity=remember_rows) for name in contracts}
        self.buffers: dict[str, Buffered] = {name: Buffered(key=source.key) for name in contracts}
        self.waiting: dict[str, Waiting] = {name: Waiting() for name in contracts}
        self.read: dict[str, dict[str, int]] = {name: {} for name in contracts}  # partition -> next offset taken
        self.checkpoints: dict[str, dict[str, int]] = {name: {} for name in contracts}
        self.latest: dict[str, DatasetManifest | None] = {name: None for name in contracts}
        self.owned: set[int] = set()
        self.generation = 0
        self.state = "starting"
        self._known: dict[str, dict[str, DatasetManifest]] = {name: {} for name in contracts}
        self._remembered: set[tuple[str, str]] = set()
        self._lock = asyncio.Lock()
        self._last: dict[str, Event] = {}
        self._claim_failed: Exception | None = None

    def checkpoint(self, dataset: str) -> dict[str, int]:
        return dict(self.checkpoints.get(dataset, {}))

    def knows(self, dataset: str, key: str) -> bool:
        """Whether an item of this key is sealed (among the remembered) or buffered."""
        return key in self.sealed.get(dataset, ()) or key in self.buffers.get(dataset, Buffered()).records

    # --- the object store side: what is sealed already -------------------------------------------

    async def learn(self) -> None:
        """Read the versions sealed since the last look, by this replica or another: ``knows`` then
        answers for their rows too."""
        async with self._lock:
            await asyncio.to_thread(self._refresh)

    def _refresh(self) -> None:
        """Read the versions sealed so far (new manifests only: versions are immutable)."""
        for dataset in self.contracts:
            known = self._known[dataset]
            keys = self.catalog.store.list_keys(f"{self.catalog.prefix}/{dataset}/")
            for key in keys:
                version = key.split("/")[-2]
                if key.endswith("/manifest.json") and version not in known:
                    known[version] = self.catalog.manifest(dataset, version)
            rolled = sorted(
                (m for m in known.values() if m.source_offsets is not None),
                key=lambda m: (m.created_at is None, m.created_at, m.version),
            )
            checkpoint: dict[str, int] = {}
            for manifest in rolled:
                checkpoint = merge_offsets(checkpoint, manifest.source_offsets or {})
            self.checkpoints[dataset] = checkpoint
            self.latest[dataset] = rolled[-1] if rolled else None
            self._remember(dataset, rolled)

    def _remember(self, dataset: str, rolled: list[DatasetManifest]) -> None:
        """Remember the record ids of the newest versions, up to ``remember_rows``."""
        recent, rows = [], 0
        for manifest in reversed(rolled):
            if rows + manifest.row_count > self.remember_rows:
                break
            rows += manifest.row_count
            if (dataset, manifest.version) not in self._remembered:
                recent.append(manifest)
        for manifest in reversed(recent):  # oldest first, so the newest are forgotten last
            for key in self.catalog.load(dataset, manifest.version)[self.source.id_column]:
                self.sealed[dataset].first_time(key)
            self._remembered.add((dataset, manifest.version))

    # --- the Kafka side ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Roll until cancelled; after any failure, start over from the checkpoints with a backoff.

        A ``CancelledError`` that does not cancel this task (a client library's own task, cancelled
        under it while Kafka was away) is a failure like any other: returning on it would leave the
        consumer's group, and no record would be sealed again while ``/health`` still said "rolling".
        """
        ticker = asyncio.create_task(self._tick())
        failures = 0
        try:
            while True:
                started = time.monotonic()
                try:
                    await self._consume()
                except (Exception, asyncio.CancelledError) as exc:
                    if isinstance(exc, asyncio.CancelledError) and _cancelling():
                        raise
                    failures = 1 if time.monotonic() - started > 60 else failures + 1
                    delay = min(self.max_backoff_s, 0.5 * 2**failures)
                    self.state = "recovering"
                    RECOVERIES.inc()
                    log.error("roller failed; resuming from the checkpoints", error=repr(exc), retry_in_s=delay)
                    await asyncio.sleep(delay)
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker

    async def _consume(self) -> None:
        consumer = AIOKafkaConsumer(
            **client_security(),
            bootstrap_servers=self.bootstrap_servers,
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=self.session_timeout_ms,
            heartbeat_interval_ms=max(1000, self.session_timeout_ms // 4),
        )
        await consumer.start()
        try:
            consumer.subscribe([self.source.topic], listener=_Handover(self, consumer))
            while True:
                batches = await consumer.getmany(timeout_ms=500, max_records=1000)
                if self._claim_failed is not None:
                    failed, self._claim_failed = self._claim_failed, None
                    raise failed
                generation = self.generation
                for tp, messages in batches.items():
                    await self._take_batch(generation, tp.partition, [(m.offset, m.value, m) for m in messages])
        finally:
            await self.release()
            with contextlib.suppress(Exception):
                await consumer.stop()

    async def claim(self, consumer: AIOKafkaConsumer, assigned: list[TopicPartition]) -> None:
        """Partitions assigned: read the checkpoints anew and resume each partition from them.

        aiokafka only logs what a rebalance listener raises and goes on consuming, so a failure
        (the object store down) is kept for the consume loop to raise: the roller owns no
        partition meanwhile, and starts over from the checkpoints after its backoff.
        """
        try:
            await self.learn()
            beginnings = await consumer.beginning_offsets(assigned) if assigned else {}
        except Exception as exc:
            self._claim_failed = exc
            return
        resume = {}
        async with self._lock:
            self.generation += 1
            for tp in assigned:
                checkpoints = [self.checkpoints[d].get(str(tp.partition), 0) for d in self.contracts]
                resume[tp.partition] = max(min(checkpoints, default=0), beginnings[tp])
                consumer.seek(tp, resume[tp.partition])
            self.owned = set(resume)
            self.state = "rolling"
        log.info("roller resumed", group=self.group_id, partitions=resume, datasets=sorted(self.contracts))

    async def release(self) -> None:
        """Partitions revoked (or the consumer stopped): drop what is buffered; it is re-read from the checkpoints."""
        async with self._lock:
            self.generation += 1
            self.owned = set()
            dropped = {d: len(b.records) for d, b in self.buffers.items() if b.records}
            self.buffers = {name: Buffered(key=self.source.key) for name in self.contracts}
            self.waiting = {name: Waiting() for name in self.contracts}
            self.read = {name: {} for name in self.contracts}
            self._last.clear()
            for dataset in self.contracts:
                BUFFERED.labels(dataset).set(0)
        if dropped:
            log.info("roller released its partitions; buffered rows will be read again", dropped=dropped)

    async def _take_batch(self, generation: int, partition: int, messages: list[tuple[int, bytes, Any]]) -> None:
        """Take a partition's fetched messages, in order: parsed first, then under one hold of the lock."""
        parsed = []
        for offset, value, raw in messages:
            try:
                record = self.source.parse(value)
            except ValidationError:
                continue  # not ours to judge: the topic's subscribers dead-letter what does not parse
            if record.dataset in self.contracts:
                parsed.append((offset, record, raw))
        if not parsed:
            return
        async with self._lock:
            if generation != self.generation or partition not in self.owned:
                return  # fetched before a rebalance: the partition was re-seeked, or is someone else's
            problems = self._problems([record for _, record, _ in parsed])
            for (offset, record, raw), problem in zip(parsed, problems, strict=True):
                await self._take_one(partition, offset, record, raw, problem)

    def _problems(self, records: list[Any]) -> list[str | None]:
        """Why each record may not be sealed (None where it may): each dataset's records checked together."""
        found: list[str | None] = [None] * len(records)
        for dataset, indexes in by_dataset(records).items():
            problems = self.source.invalid([records[i] for i in indexes], self.contracts[dataset])
            for index, problem in zip(indexes, problems, strict=True):
                found[index] = problem
        return found

    async def _take_one(self, partition: int, offset: int, record: Any, raw: Any, invalid: str | None) -> None:
        dataset = record.dataset
        if offset < self.checkpoints[dataset].get(str(partition), 0):
            return  # already in a sealed version
        read = self.read[dataset]
        read[str(partition)] = max(read.get(str(partition), 0), offset + 1)
        key = self.source.key(record)
        if key in self.sealed[dataset]:
            return  # seen twice (a redelivered submission); sealed once already
        if invalid is not None:
            await self._reject(raw, invalid)
            return
        if self.ready is not None and not self.ready(record):
            self.waiting[dataset].hold(key, Held(record, partition, offset, time.monotonic(), raw))
            return
        self._buffer(dataset, record, partition, offset)
        if self.buffers[dataset].due(time.monotonic(), self.max_rows, self.max_age_s):
            await self._seal(dataset)

    def _buffer(self, dataset: str, record: Any, partition: int, offset: int) -> None:
        buffer = self.buffers[dataset]
        if buffer.add(record, partition, offset, time.monotonic()):
            self._last[dataset] = record
        BUFFERED.labels(dataset).set(len(buffer.records))

    async def _reject(self, raw: Any, reason: str) -> None:
        log.warning("not sealed; dead-lettered", topic=self.source.topic, reason=reason)
        if self.dead_letter is not None and raw is not None:
            await self.dead_letter(raw, reason)

    async def _release_waiting(self, dataset: str) -> None:
        """Held items whose time came: the ready into the buffer, the expired to dead letters."""
        if not self.waiting[dataset].held or self.ready is None:
            return
        if self.learn_more is not None and time.monotonic() - self._learnt >= LEARN_EVERY_S:
            self._learnt = time.monotonic()
            try:
                await self.learn_more()
            except Exception as exc:  # what is held waits for the next look (or its time runs out)
                log.warning("could not learn what was sealed since", error=repr(exc))
        done, expired = self.waiting[dataset].release(self.ready, time.monotonic(), self.wait_s)
        for held in done:
            if self.source.key(held.item) not in self.sealed[dataset]:
                self._buffer(dataset, held.item, held.partition, held.offset)
        for held in expired:
            await self._reject(
                held.raw,
                f"{self.source.topic}: waited {self.wait_s:g} s for what it names: "
                + (f"no record {getattr(held.item, 'record_id', None)!r} of dataset {dataset!r}"),
            )

    async def _tick(self) -> None:
        """Seal by age: a buffer's oldest row waits at most ``max_age_s`` (plus the tick)."""
        period = min(1.0, self.max_age_s / 4)
        while True:
            await asyncio.sleep(period)
            for dataset in self.contracts:
                if not self.waiting[dataset].held and not self.buffers[dataset].due(
                    time.monotonic(), self.max_rows, self.max_age_s
                ):
                    continue
                try:
                    async with self._lock:
                        await self._release_waiting(dataset)
                        if self.buffers[dataset].due(time.monotonic(), self.max_rows, self.max_age_s):
                            await self._seal(dataset)
                except Exception as exc:  # the buffer is intact: the next tick tries again
                    log.warning("sealing by age failed; will retry", dataset=dataset, error=repr(exc))

    async def seal_now(self, dataset: str) -> DatasetManifest | None:
        """Seal what is buffered for a dataset now (``POST /datasets/{dataset}/seal``)."""
        async with self._lock:
            await self._release_waiting(dataset)
            return await self._seal(dataset) if self.buffers[dataset].records else None

    async def _seal(self, dataset: str) -> DatasetManifest:
        """Write the buffer as a version (the checkpoint travels in its manifest), then announce it.

        Raises only while the buffer is still intact (nothing sealed yet).
        """
        buffer = self.buffers[dataset]
        manifest, data = self.source.seal(
            list(buffer.records.values()),
            self.contracts[dataset],
            parent=self.latest.get(dataset),
            # what was read is sealed, skipped or dead-lettered, but for the labels still held back
            offsets=self.waiting[dataset].cap(
                merge_offsets(self.checkpoints[dataset], buffer.offsets, self.read[dataset])
            ),
            bucket=self.bucket,
            created_at=datetime.now(UTC),
        )
        await _retrying(lambda: asyncio.to_thread(self.catalog.write, manifest, data), attempts=3)
        for record_id in buffer.records:
            self.sealed[dataset].first_time(record_id)
        self._known[dataset][manifest.version] = manifest
        self._remembered.add((dataset, manifest.version))
        self.checkpoints[dataset] = dict(manifest.source_offsets or {})
        self.latest[dataset] = manifest
        self.buffers[dataset] = Buffered(key=self.source.key)
        BUFFERED.labels(dataset).set(0)
        VERSIONS.labels(dataset).inc()
        event = versioned_event(manifest, self._last.pop(dataset, None))
        try:
            await _retrying(lambda: self.publish(event), attempts=6)
        except Exception as exc:  # the version is sealed and listed; only its announcement is lost
            log.error(
                "dataset version sealed but not announced", dataset=dataset, version=manifest.version, error=repr(exc)
            )
        log.info("dataset version sealed", dataset=dataset, version=manifest.version, rows=manifest.row_count)
        return manifest


def _cancelling() -> bool:
    """Whether this task is being cancelled (as opposed to a ``CancelledError`` from something it awaited)."""
    task = asyncio.current_task()
    return task is None or task.cancelling() > 0


async def _retrying(call: Callable[[], Awaitable[object]], *, attempts: int, first_delay_s: float = 0.25) -> None:
    """Await ``call`` until it succeeds, backing off exponentially; re-raise the last failure."""
    for attempt in range(attempts):
        try:
            await call()
            return
        except Exception:
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(first_delay_s * 2**attempt)
