"""Known traffic for the reliability tests, and exact counts of what came out of the stack.

A stream is records (``records.raw``, every 20th invalid), prediction requests
(``predictions.requests``) for a model, and a label for every answer (``labels``), each
tagged with the test's id. What arrives is counted per logical id (record id, request id,
the record a vector was computed from) and, within one logical id, per ``event_id``:

- the same ``event_id`` again is an at-least-once redelivery: consumers dedup it, harmless;
- another ``event_id`` for the same logical id is a real second effect: counted twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition

from flywheel.common.datasets import DatasetCatalog
from flywheel.common.kafka import client_security
from flywheel.common.objectstore import ObjectStore
from flywheel.common.settings import KafkaSettings, ObjectStoreSettings
from flywheel.schemas import (
    DEADLETTERS,
    FEATURES_ONLINE,
    MODELS_APPROVED,
    MODELS_CHAMPION,
    PREDICTIONS,
    PREDICTIONS_LABELLED,
    PREDICTIONS_REQUESTS,
    RECORDS_RAW,
    RECORDS_REJECTED,
    RECORDS_VALIDATED,
    TOPICS,
    LabelObserved,
    PredictionRequested,
)
from infra.launcher.processes import stop
from tests.integration.test_ingestion_stream import stream as record_stream
from tests.integration.test_ingestion_versions import rows_sealed
from tests.integration.test_serving_rollouts import live_applications
from tests.integration.test_training_runs import agrawal_rows, request_training, wait_for, write_version
from tests.support import stack
from tests.support.kafka import TopicReader, producer, send_event

COUNTS: list[str] = []
SERVICES = ("ingestion", "features", "training", "registry", "serving", "monitoring")


# -- counting ---------------------------------------------------------------------------------------


@dataclass
class Tally:
    """What one output shows for the messages a test sent."""

    what: str
    sent: int
    arrived: int = 0
    distinct: int = 0
    redelivered: int = 0
    doubled: list[str] = field(default_factory=list)
    dead_lettered: int | None = None

    def line(self) -> str:
        dead = "" if self.dead_lettered is None else f"  dead-lettered {self.dead_lettered:>4}"
        return (
            f"{self.what:<34} sent {self.sent:>5}  arrived {self.arrived:>5}  distinct {self.distinct:>5}"
            f"  redelivered {self.redelivered:>3}  doubled {len(self.doubled):>3}{dead}"
        )

    @property
    def exact(self) -> bool:
        return self.distinct == self.sent and not self.doubled


def tally(what: str, sent: int, messages: Iterable[dict[str, Any]], key: Callable[[dict], Any]) -> Tally:
    ids: dict[Any, list[str]] = defaultdict(list)
    arrived = 0
    for message in messages:
        arrived += 1
        ids[key(message)].append(str(message.get("event_id")))
    redelivered = sum(len(events) - len(set(events)) for events in ids.values())
    doubled = sorted(str(k) for k, events in ids.items() if len(set(events)) > 1)
    return Tally(what, sent, arrived, len(ids), redelivered, doubled)


def report(test: str, *lines: Tally | str) -> str:
    """Record a test's counts for the run's summary; returns them as text for assertion messages."""
    text = "\n".join(f"  {line.line() if isinstance(line, Tally) else line}" for line in lines)
    COUNTS.append(f"{test}\n{text}")
    print(f"\n{test}\n{text}")
    return text


# -- the stack's state --------------------------------------------------------------------------------


def ungrouped(topic: str, service: str) -> bool:
    """Whether the catalogue has every replica of ``service`` read ``topic`` in full, without a consumer
    group: no commits, no lag to wait for."""
    return TOPICS[topic].read_in_full_by(service)


async def consumed_topics(http: httpx.AsyncClient, grouped_only: bool = True) -> dict[str, list[str]]:
    """Each service's consumer group and the topics it reads, from its own AsyncAPI document
    (without the group-less subscriptions, unless ``grouped_only`` is False, and never the topics a
    service reads with a plain consumer outside its group, ``x-flywheel-read: direct``)."""
    groups: dict[str, list[str]] = {}
    for service in SERVICES:
        spec = (await http.get(f"{stack.service_url(service)}/asyncapi.json")).json()
        channels = spec.get("channels", {})
        topics = set()
        for operation in spec.get("operations", {}).values():
            if operation.get("action") == "receive" and operation.get("x-flywheel-read") != "direct":
                ref = operation["channel"]["$ref"].split("/")[-1]
                topic = channels[ref]["address"]
                if not (grouped_only and ungrouped(topic, service)):
                    topics.add(topic)
        groups[f"flywheel-{service}"] = sorted(topics)
    return groups


async def lags(bootstrap: str, groups: dict[str, list[str]]) -> dict[str, int]:
    """Messages not yet committed, per ``group topic``: 0 everywhere means every consumer caught up."""
    admin = AIOKafkaAdminClient(**client_security(), bootstrap_servers=bootstrap)
    await admin.start()
    reader = None
    try:
        reader = AIOKafkaConsumer(**client_security(), bootstrap_servers=bootstrap, enable_auto_commit=False)
        await reader.start()
        described = await admin.describe_topics(sorted({t for topics in groups.values() for t in topics}))
        partitions_of = {d["topic"]: sorted(p["partition"] for p in d["partitions"]) for d in described}
        behind: dict[str, int] = {}
        for group, topics in groups.items():
            committed = await admin.list_consumer_group_offsets(group)
            partitions = [TopicPartition(t, p) for t in topics for p in partitions_of.get(t, ())]
            if not partitions:
                continue
            ends = await reader.end_offsets(partitions)
            for tp in partitions:
                done = committed.get(tp)
                lag = ends[tp] - (done.offset if done is not None and done.offset >= 0 else 0)
                if lag > 0:
                    behind[f"{group} {tp.topic}"] = behind.get(f"{group} {tp.topic}", 0) + lag
        return behind
    finally:
        if reader is not None:
            await reader.stop()
        await admin.close()


async def caught_up(kafka: KafkaSettings, timeout: float = 60) -> dict[str, int]:
    """Wait until every service's consumer group has committed up to the end of every topic it reads;
    the lags left at the timeout (empty: all caught up)."""
    async with httpx.AsyncClient(timeout=10) as http:
        groups = await consumed_topics(http)
    deadline = time.monotonic() + timeout
    while True:
        behind = await lags(kafka.bootstrap_servers, groups)
        if not behind or time.monotonic() > deadline:
            return behind
        await asyncio.sleep(1)


async def skip_past(bootstrap: str, stuck: dict[str, list[TopicPartition]]) -> None:
    """Repair consumer groups wedged on messages they can neither handle nor dead-letter: stop those
    services, commit each group at the end of its partitions, start them again (healthy)."""
    if not stuck:
        return
    await asyncio.gather(*(asyncio.to_thread(stop, stack.component(s)) for s in stuck))
    for service, partitions in stuck.items():
        for attempt in range(10):  # the stopped member may take a moment to leave the group
            consumer = AIOKafkaConsumer(
                **client_security(),
                bootstrap_servers=bootstrap,
                group_id=f"flywheel-{service}",
                enable_auto_commit=False,
            )
            await consumer.start()
            try:
                consumer.assign(partitions)
                ends = await consumer.end_offsets(partitions)
                await consumer.commit({tp: ends[tp] for tp in partitions})
                break
            except Exception:
                if attempt == 9:
                    raise
                await asyncio.sleep(2)
            finally:
                await consumer.stop()
    await asyncio.to_thread(stack.restart, *stuck)


async def unfinished_runs(http: httpx.AsyncClient, model_names: set[str], timeout: float = 120) -> list[dict]:
    """Wait until no training run of these models is queued or running; those still unfinished."""
    deadline = time.monotonic() + timeout
    while True:
        runs = (await http.get(f"{stack.service_url('training')}/runs")).json()
        open_runs = [r for r in runs if r["model_name"] in model_names and r["status"] in ("queued", "running")]
        if not open_runs or time.monotonic() > deadline:
            return open_runs
        await asyncio.sleep(1)


# -- the shared model -----------------------------------------------------------------------------------


@dataclass
class SharedModel:
    name: str
    versions: tuple[str, ...] = ("1", "2")


FAST = {"max_iter": 20}  # a small model: a run takes seconds, not minutes, on two busy cores


async def champion_served(model: str, version: str, timeout: float) -> None:
    """Wait until a serving replica holds ``version`` as the model's champion (it loads it from MLflow). A model
    of no served spec is loaded where its approval or a request for it lands: on a cluster, on either replica."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=30) as http:
        while True:
            replicas = stack.replica_urls("serving")
            held = {url: (await http.get(f"{url}/models")).json().get(model, {}) for url in replicas}
            if any(state.get("champion_version") == version for state in held.values()):
                return
            assert time.monotonic() < deadline, f"serving holds {held} for {model}, not champion v{version}"
            await asyncio.sleep(1)


async def ensure_model(kafka: KafkaSettings, store: ObjectStoreSettings, services: dict, name: str) -> SharedModel:
    """Train v1 (the first model: champion) and v2 on the same data (approved: serving starts its canary)."""
    async with (
        TopicReader(kafka.bootstrap_servers, MODELS_CHAMPION.name) as champion,
        TopicReader(kafka.bootstrap_servers, MODELS_APPROVED.name) as approved,
    ):
        await request_training(
            services["training"], name, write_version(store, agrawal_rows(1200, 0, 41)), params=FAST, timeout=60
        )
        await wait_for(champion, name, timeout=240)
        await champion_served(name, "1", timeout=180)
        await request_training(
            services["training"], name, write_version(store, agrawal_rows(1200, 0, 41)), params=FAST, timeout=60
        )
        await approved.collect(  # v1 was approved too, as the first model
            lambda seen: any(b["version"] == "2" for b in seen),
            timeout=240,
            where=lambda b: b["model_name"] == name,
        )
    return SharedModel(name)


# -- the stream --------------------------------------------------------------------------------------------


async def drain(reader: TopicReader, until: Callable[[list[dict]], bool], timeout: float, where) -> None:
    """Read until ``until`` holds or the time is up (the counts tell what was missing)."""
    with contextlib.suppress(AssertionError):
        await reader.collect(until, timeout=timeout, where=where)


class Stream:
    """Records, prediction requests and labels of one test, sent in halves around a fault."""

    def __init__(self, kafka: KafkaSettings, tag: str, model: str | None, records: int = 600, predictions: int = 300):
        self.kafka, self.tag, self.model = kafka, tag, model
        self.records, self.invalid = record_stream(tag, records)
        self.valid = {e.record_id for e in self.records} - self.invalid
        self.requests: list[PredictionRequested] = []
        self.truth: dict[str, int] = {}
        for i, (record, label) in enumerate(live_applications(predictions if model else 0, seed=7)):
            request = PredictionRequested(
                producer="reliability",
                dataset="loans",
                request_id=f"{tag}-p{i}",
                entity_id=f"{tag}-e{i}",
                data={**record, "applicant_id": f"{tag}-e{i}"},
                model_name=model,
            )
            self.requests.append(request)
            self.truth[request.request_id] = label
        self.labelled: set[str] = set()
        self.started_at = datetime.now(UTC)
        self.readers: dict[str, TopicReader] = {}
        self._stack = contextlib.AsyncExitStack()

    def mine(self, field_name: str) -> Callable[[dict], bool]:
        prefix = f"{self.tag}-"
        return lambda body: str(body.get(field_name) or "").startswith(prefix)

    async def __aenter__(self) -> Stream:
        bootstrap = self.kafka.bootstrap_servers
        for topic in (
            RECORDS_VALIDATED,
            RECORDS_REJECTED,
            FEATURES_ONLINE,
            PREDICTIONS,
            PREDICTIONS_LABELLED,
            DEADLETTERS,
        ):
            self.readers[topic.name] = await self._stack.enter_async_context(TopicReader(bootstrap, topic.name))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    async def send(self, part: int, of: int = 2, pause_s: float = 0.0) -> None:
        """Send the ``part``-th of ``of`` slices of records and requests (a fresh producer each time,
        so a broker restarted in between is reconnected to)."""
        send = await producer(self.kafka.bootstrap_servers)
        try:
            records = self.records[part * len(self.records) // of : (part + 1) * len(self.records) // of]
            requests = self.requests[part * len(self.requests) // of : (part + 1) * len(self.requests) // of]
            for chunk in range(10):
                for event in records[chunk::10]:
                    await send.send(RECORDS_RAW.name, event.to_bytes(), key=event.record_id.encode())
                for request in requests[chunk::10]:
                    await send.send(
                        PREDICTIONS_REQUESTS.name, request.to_bytes(), key=(request.entity_id or "").encode()
                    )
                await send.flush()
                if pause_s:
                    await asyncio.sleep(pause_s / 10)
        finally:
            await send.stop()

    async def label(self) -> int:
        """A label for every answer seen so far that has none yet; how many were sent."""
        await drain(self.readers[PREDICTIONS.name], lambda _: True, 0.2, self.mine("request_id"))
        answers = [a for a in self.readers[PREDICTIONS.name].seen if a["served"]]
        fresh = [a for a in answers if a["request_id"] not in self.labelled]
        if not fresh:
            return 0
        send = await producer(self.kafka.bootstrap_servers)
        try:
            for answer in fresh:
                self.labelled.add(answer["request_id"])
                await send_event(
                    send,
                    LabelObserved(
                        producer="reliability",
                        dataset="loans",
                        label=self.truth[answer["request_id"]],
                        prediction_id=answer["prediction_id"],
                        entity_id=answer["entity_id"],
                    ),
                )
        finally:
            await send.stop()
        return len(fresh)

    async def settle(self, timeout: float = 90) -> None:
        """Wait for every expected output (or the timeout), label the answers, then read stragglers."""
        readers = self.readers
        await asyncio.gather(
            drain(
                readers[RECORDS_VALIDATED.name],
                lambda seen: len({b["record_id"] for b in seen}) >= len(self.valid),
                timeout,
                self.mine("record_id"),
            ),
            drain(
                readers[RECORDS_REJECTED.name],
                lambda seen: len({b["record_id"] for b in seen}) >= len(self.invalid),
                timeout,
                self.mine("record_id"),
            ),
            drain(
                readers[FEATURES_ONLINE.name],
                lambda seen: len({b["entity_id"] for b in seen}) >= len(self.valid),
                timeout,
                self.mine("entity_id"),
            ),
            drain(
                readers[PREDICTIONS.name],
                lambda seen: len({b["request_id"] for b in seen if b["served"]}) >= len(self.requests),
                timeout,
                self.mine("request_id"),
            ),
        )
        await self.label()
        await drain(  # each label joined to its answer by monitoring
            readers[PREDICTIONS_LABELLED.name],
            lambda seen: len({b["request_id"] for b in seen}) >= len(self.labelled),
            timeout,
            self.mine("request_id"),
        )
        await asyncio.sleep(3)  # anything counted twice would arrive now
        for name, key in (
            (RECORDS_VALIDATED.name, "record_id"),
            (RECORDS_REJECTED.name, "record_id"),
            (FEATURES_ONLINE.name, "entity_id"),
            (PREDICTIONS.name, "request_id"),
            (PREDICTIONS_LABELLED.name, "request_id"),
        ):
            await drain(readers[name], lambda _: False, 0.5, self.mine(key))

    async def sealed(self, store: ObjectStoreSettings) -> Tally:
        """The tagged rows in dataset versions sealed since the stream began."""
        catalog = DatasetCatalog(ObjectStore(store))
        async with httpx.AsyncClient(base_url=stack.service_url("ingestion"), timeout=30) as ingestion:
            with contextlib.suppress(AssertionError):
                await rows_sealed(ingestion, catalog, self.tag, len(self.valid), since=self.started_at, attempts=30)
            ids = await rows_sealed(ingestion, catalog, self.tag, 0, since=self.started_at, attempts=1)
        counts = Counter(ids)
        return Tally(
            "dataset rows sealed (record id)",
            len(self.valid),
            arrived=len(ids),
            distinct=len(counts),
            doubled=sorted(k for k, n in counts.items() if n > 1),
        )

    def tallies(self) -> list[Tally]:
        seen = {name: reader.seen for name, reader in self.readers.items()}
        dead = [
            d for d in seen[DEADLETTERS.name] if d.get("source_topic") in (RECORDS_RAW.name, PREDICTIONS_REQUESTS.name)
        ]
        out = [
            tally(
                "records.validated (record id)", len(self.valid), seen[RECORDS_VALIDATED.name], lambda b: b["record_id"]
            ),
            tally(
                "records.rejected (record id)", len(self.invalid), seen[RECORDS_REJECTED.name], lambda b: b["record_id"]
            ),
            tally(
                "features.online (source record)",
                len(self.valid),
                seen[FEATURES_ONLINE.name],
                lambda b: b["entity_id"],
            ),
        ]
        if self.requests:
            served = [a for a in seen[PREDICTIONS.name] if a["served"]]
            answers = tally("predictions (request id)", len(self.requests), served, lambda b: b["request_id"])
            answers.dead_lettered = len(dead)
            out.append(answers)
            labelled = seen[PREDICTIONS_LABELLED.name]
            out.append(
                tally("predictions.labelled (request id)", len(self.labelled), labelled, lambda b: b["request_id"])
            )
        return out


async def answered(http: httpx.AsyncClient, model: str) -> dict[str, Any]:
    """Serving's view of a model: champion version and whether a rollout runs."""
    return (await http.get(f"{stack.service_url('serving')}/models")).json().get(model, {})


async def with_deadline(awaitable, timeout: float, what: str):
    try:
        return await asyncio.wait_for(awaitable, timeout)
    except TimeoutError as exc:
        raise AssertionError(f"{what} not done in {timeout:.0f} s") from exc
