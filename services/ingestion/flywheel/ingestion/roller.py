"""The roller: validated records into dataset versions, exactly once across crashes.

It reads ``records.validated`` with its own consumer and never trusts Kafka's committed
offsets: each manifest stores, per partition, the offset it sealed up to
(``source_offsets``). On start it resumes every partition from the smallest checkpoint
of any dataset and skips, per dataset, what that dataset already sealed. A crash
between writing a version and anything after it therefore neither loses nor repeats a
record: what was sealed is skipped, what was buffered is read again.

A validated record can still reach the topic twice (a crash after publishing it and before
committing its submission). The roller remembers the record ids of recent versions (loaded
from them on start, ``remember_rows`` at most) and seals each id once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from uuid import NAMESPACE_URL, uuid5

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import ValidationError

from flywheel.common.contracts import DataContract
from flywheel.common.datasets import DatasetCatalog
from flywheel.common.kafka import SeenEvents
from flywheel.ingestion.metrics import BUFFERED, VERSIONS
from flywheel.ingestion.versions import RECORD_ID, Buffered, seal
from flywheel.schemas import RECORDS_VALIDATED, DatasetManifest, DatasetVersioned, Event, RecordValidated

log = structlog.get_logger(__name__)

Publish = Callable[[Event], Awaitable[None]]


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
        remember_rows: int = 1_000_000,
    ) -> None:
        self.catalog, self.contracts, self.publish = catalog, contracts, publish
        self.bootstrap_servers, self.bucket = bootstrap_servers, bucket
        self.max_rows, self.max_age_s = max_rows, max_age_s
        self.sealed: dict[str, SeenEvents] = {name: SeenEvents(capacity=remember_rows) for name in contracts}
        self.remember_rows = remember_rows
        self.buffers: dict[str, Buffered] = {name: Buffered() for name in contracts}
        self.latest: dict[str, DatasetManifest | None] = {}
        self.state = "starting"
        self._lock = asyncio.Lock()
        self._last: dict[str, RecordValidated] = {}

    def checkpoint(self, dataset: str) -> dict[str, int]:
        manifest = self.latest.get(dataset)
        return dict(manifest.source_offsets or {}) if manifest else {}

    def _last_rolled(self, dataset: str) -> DatasetManifest | None:
        """The newest version this roller sealed (versions written by other tools carry no offsets)."""
        rolled = [m for m in self.catalog.manifests(dataset) if m.source_offsets is not None]
        return rolled[-1] if rolled else None

    def _remember_sealed(self, dataset: str) -> None:
        """Load the record ids of the newest versions this roller sealed, up to ``remember_rows``."""
        rolled = [m for m in self.catalog.manifests(dataset) if m.source_offsets is not None]
        recent, rows = [], 0
        for manifest in reversed(rolled):
            if rows + manifest.row_count > self.remember_rows:
                break
            recent.append(manifest)
            rows += manifest.row_count
        for manifest in reversed(recent):  # oldest first, so the newest are forgotten last
            for record_id in self.catalog.load(dataset, manifest.version)[RECORD_ID]:
                self.sealed[dataset].first_time(record_id)

    async def run(self) -> None:
        """Consume until cancelled; seal by size as records arrive and by age once a second."""
        for dataset in self.contracts:
            self.latest[dataset] = await asyncio.to_thread(self._last_rolled, dataset)
            await asyncio.to_thread(self._remember_sealed, dataset)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap_servers, enable_auto_commit=False, auto_offset_reset="earliest"
        )
        await consumer.start()
        ticker = asyncio.create_task(self._tick())
        try:
            partitions = await self._assign(consumer)
            self.state = "rolling"
            log.info("roller resumed", partitions=partitions, datasets=sorted(self.contracts))
            while True:
                batches = await consumer.getmany(timeout_ms=500, max_records=1000)
                for tp, messages in batches.items():
                    for message in messages:
                        await self._take(tp.partition, message.offset, message.value)
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
            await consumer.stop()

    async def _assign(self, consumer: AIOKafkaConsumer) -> dict[int, int]:
        found = None
        for _ in range(100):
            found = consumer.partitions_for_topic(RECORDS_VALIDATED.name)
            if found:
                break
            await consumer._client.force_metadata_update()
            await asyncio.sleep(0.2)
        if not found:
            raise RuntimeError(f"topic {RECORDS_VALIDATED.name} has no partitions")
        partitions = [TopicPartition(RECORDS_VALIDATED.name, p) for p in sorted(found)]
        consumer.assign(partitions)
        beginnings = await consumer.beginning_offsets(partitions)
        resume = {}
        for tp in partitions:
            checkpoints = [self.checkpoint(d).get(str(tp.partition), 0) for d in self.contracts]
            resume[tp.partition] = max(min(checkpoints, default=0), beginnings[tp])
            consumer.seek(tp, resume[tp.partition])
        return resume

    async def _take(self, partition: int, offset: int, value: bytes) -> None:
        try:
            record = RecordValidated.model_validate_json(value)
        except ValidationError:
            return  # not ours to judge: ingestion wrote it; the dead-letter path is upstream
        if record.dataset not in self.contracts:
            return
        if offset < self.checkpoint(record.dataset).get(str(partition), 0):
            return  # already in a sealed version
        if record.record_id in self.sealed[record.dataset]:
            return  # validated twice (a redelivered submission); sealed once already
        async with self._lock:
            buffer = self.buffers[record.dataset]
            if buffer.add(record, partition, offset, time.monotonic()):
                self._last[record.dataset] = record
            BUFFERED.labels(record.dataset).set(len(buffer.records))
            if buffer.due(time.monotonic(), self.max_rows, self.max_age_s):
                await self._seal(record.dataset)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            for dataset, buffer in self.buffers.items():
                if buffer.due(time.monotonic(), self.max_rows, self.max_age_s):
                    async with self._lock:
                        if self.buffers[dataset].due(time.monotonic(), self.max_rows, self.max_age_s):
                            await self._seal(dataset)

    async def seal_now(self, dataset: str) -> DatasetManifest | None:
        """Seal what is buffered for a dataset now (``POST /datasets/{dataset}/seal``)."""
        async with self._lock:
            return await self._seal(dataset) if self.buffers[dataset].records else None

    async def _seal(self, dataset: str) -> DatasetManifest:
        buffer = self.buffers[dataset]
        parent = self.latest.get(dataset)
        manifest, data = seal(
            list(buffer.records.values()),
            self.contracts[dataset],
            parent=parent,
            offsets=buffer.offsets,
            bucket=self.bucket,
            created_at=datetime.now(UTC),
        )
        await asyncio.to_thread(self.catalog.write, manifest, data)  # the checkpoint is in the manifest
        for record_id in buffer.records:
            self.sealed[dataset].first_time(record_id)
        self.latest[dataset] = manifest
        self.buffers[dataset] = Buffered()
        BUFFERED.labels(dataset).set(0)
        VERSIONS.labels(dataset).inc()
        last = self._last.pop(dataset, None)
        event = DatasetVersioned(
            event_id=uuid5(NAMESPACE_URL, f"flywheel:dataset:{dataset}:{manifest.version}"),
            producer="ingestion",
            dataset=dataset,
            version=manifest.version,
            manifest=manifest,
            **(last.caused() if last else {}),
        )
        await self.publish(event)
        log.info("dataset version sealed", dataset=dataset, version=manifest.version, rows=manifest.row_count)
        return manifest
