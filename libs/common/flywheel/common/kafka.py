"""The Kafka broker every service uses: durable producers, commit-after-handle, dead letters.

FastStream has no dead-letter support of its own, and ``NACK_ON_ERROR`` alone
would redeliver a poison message forever. ``dead_letter_middleware`` retries a
failing handler a bounded number of times, then publishes the message's
original bytes and the reason to ``deadletters`` and lets the consumer go on.
Messages that cannot parse or validate are not retried: they will not get better.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import functools
import hashlib
import inspect
import json
import logging
import random
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, NamedTuple, TypeVar
from uuid import NAMESPACE_URL, UUID, uuid5

import structlog
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from aiokafka.partitioner import murmur2
from faststream import AckPolicy, BaseMiddleware
from faststream.kafka import KafkaBroker
from faststream.kafka.prometheus import KafkaPrometheusMiddleware
from faststream.kafka.publisher.state import RealProducer
from faststream.message import StreamMessage
from faststream.prometheus.types import PublishingStatus
from faststream.security import SASLScram256
from prometheus_client import REGISTRY, CollectorRegistry, Counter
from pydantic import ValidationError

from flywheel.common.settings import KafkaSettings
from flywheel.schemas import (
    DEADLETTER_MAX_BYTES,
    DEADLETTERS,
    TOPICS,
    Event,
    MessageDeadLettered,
    Topic,
    name_id,
    topic_for,
)

log = structlog.get_logger(__name__)
T = TypeVar("T")

DEAD_LETTERS = Counter(
    "flywheel_dead_letters_total",
    "Messages sent to the dead-letter topic.",
    ["source_topic", "error_type"],
)


# Every message the broker's default limit (1,048,588 bytes) lets onto a topic is kept whole: base64
# grows it by a third, and the dead-letter topic takes letters up to DEADLETTER_MAX_BYTES. Anything
# bigger (a topic configured past the default) is cut, with its size and digest in the reason.
MAX_KEPT_BYTES = 1024 * 1024 + 1024
assert MAX_KEPT_BYTES * 4 // 3 + 64 * 1024 < DEADLETTER_MAX_BYTES


class InvalidMessage(ValueError):
    """A handler's verdict that a well-formed message is semantically invalid: never retried."""


NOT_RETRIED: tuple[type[BaseException], ...] = (
    ValidationError,
    json.JSONDecodeError,
    UnicodeDecodeError,
    InvalidMessage,
)


def _headers(raw: Any) -> dict[str, str]:
    return {
        k: (v.decode(errors="replace") if isinstance(v, bytes) else str(v))
        for k, v in (getattr(raw, "headers", None) or ())
    }


def dead_letter_middleware(
    broker_ref: Callable[[], KafkaBroker],
    *,
    service: str,
    attempts: int,
    backoff_s: float,
) -> type[BaseMiddleware]:
    """Build the middleware class; ``broker_ref`` returns the broker it publishes dead letters on."""

    class DeadLetterMiddleware(BaseMiddleware):
        async def consume_scope(self, call_next: Callable[[Any], Awaitable[Any]], msg: Any) -> Any:
            headers = _headers(self.msg)
            structlog.contextvars.bind_contextvars(
                correlation_id=headers.get("correlation_id"),
                event_type=headers.get("event_type"),
            )
            for attempt in range(1, attempts + 1):
                try:
                    return await call_next(msg)
                except NOT_RETRIED:
                    raise
                except Exception as exc:
                    if attempt == attempts:
                        exc.add_note(f"failed {attempts} attempts")
                        raise
                    log.warning("handler failed, retrying", attempt=attempt, error=repr(exc))
                    await asyncio.sleep(backoff_s * attempt)
            raise AssertionError("unreachable")

        async def after_processed(
            self,
            exc_type: Any = None,
            exc_val: BaseException | None = None,
            exc_tb: Any = None,
        ) -> bool:
            try:
                if exc_val is None or not isinstance(exc_val, Exception):
                    return False
                records = self.msg if isinstance(self.msg, tuple | list) else (self.msg,)
                for record in records:
                    if getattr(record, "topic", None) == DEADLETTERS.name:
                        # A dead letter that fails again is logged, never re-lettered: no loops.
                        log.error("dead letter could not be handled", error=repr(exc_val))
                        continue
                    await publish_dead_letter(broker_ref(), record, exc_val, service, attempts)
                return True
            finally:
                structlog.contextvars.unbind_contextvars("correlation_id", "event_type")

    return DeadLetterMiddleware


async def publish_dead_letter(
    broker: KafkaBroker,
    record: Any,
    exc: Exception,
    service: str,
    attempts: int,
) -> None:
    """Publish one consumed record, bytes untouched, with why it could not be handled."""
    await publish_letter(broker, dead_letter(record, exc, service, attempts))


async def publish_letter(broker: KafkaBroker, letter: MessageDeadLettered) -> None:
    """Publish a dead letter; count and log it."""
    await publish_event(broker, letter)
    DEAD_LETTERS.labels(letter.source_topic, letter.error_type).inc()
    log.error(
        "message dead-lettered", source_topic=letter.source_topic, reason=letter.reason, offset=letter.source_offset
    )


def dead_letter(record: Any, exc: Exception, service: str, attempts: int = 1) -> MessageDeadLettered:
    """The dead letter of one consumed record: its key and bytes as received, and why it was refused."""
    value = getattr(record, "value", b"") or b""
    key = getattr(record, "key", None)
    topic = getattr(record, "topic", "unknown")
    retried = not isinstance(exc, NOT_RETRIED)
    exc = _unparseable(value) or exc
    reason = _reason(exc)
    raw = value if isinstance(value, bytes) else str(value).encode()
    if len(raw) > MAX_KEPT_BYTES:  # a letter must fit in a Kafka message; the whole one stays at its offset
        digest = hashlib.sha256(raw).hexdigest()
        reason = f"{reason} [original value cut from {len(raw)} to {MAX_KEPT_BYTES} bytes; sha256 {digest}]"
        raw = raw[:MAX_KEPT_BYTES]
    correlation = _headers(record).get("correlation_id") or _correlation_in(raw)
    envelope: dict[str, Any] = {}
    with contextlib.suppress(ValueError):
        envelope["correlation_id"] = UUID(correlation) if correlation else None
    partition, offset = getattr(record, "partition", None), getattr(record, "offset", None)
    if partition is not None and offset is not None:  # the same message lettered again (a retried batch): same id
        envelope["event_id"] = uuid5(NAMESPACE_URL, f"flywheel:deadletter:{service}:{topic}:{partition}:{offset}")
    return MessageDeadLettered(
        producer=service,
        source_topic=topic,
        source_partition=partition,
        source_offset=offset,
        consumer_group=service,
        reason=reason,
        error_type=type(exc).__name__,
        attempts=attempts if retried else 1,
        original_key=base64.b64encode(key).decode() if isinstance(key, bytes) else None,
        original_value=base64.b64encode(raw).decode(),
        **{k: v for k, v in envelope.items() if v is not None},
    )


def _correlation_in(raw: bytes) -> str | None:
    """The loop a refused event claimed to belong to, when its body says (a producer may set no headers)."""
    if len(raw) > 64 * 1024:
        return None
    with contextlib.suppress(ValueError, UnicodeDecodeError):
        body = json.loads(raw)
        if isinstance(body, dict) and isinstance(body.get("correlation_id"), str):
            return body["correlation_id"]
    return None


async def parse_each(
    broker: KafkaBroker, topic: Topic, bodies: list[bytes], message: Any, service: str
) -> list[Parsed]:
    """Parse a batch one message at a time: each that is not a valid event of ``topic`` is
    dead-lettered with its bytes and reason; the rest are returned with their records, in order.

    For subscribers that take their bodies undecoded (``decoder=undecoded``), so that one bad
    message costs one dead letter, not the batch.
    """
    raws = message.raw_message if isinstance(message.raw_message, tuple | list) else (message.raw_message,)
    parsed: list[Parsed] = []
    for raw, body in zip(raws, bodies, strict=True):
        if getattr(raw, "topic", None) is None:  # the in-memory test broker's records carry less
            raw = SimpleNamespace(value=body, key=None, topic=topic.name, headers=())
        try:
            parsed.append(Parsed(raw, topic.parse(body)))
        except ValidationError as exc:
            await publish_dead_letter(broker, raw, exc, service=service, attempts=1)
    return parsed


async def handle_each(broker: KafkaBroker, record: Any, effect: Callable[[], Awaitable[T]], service: str) -> T | None:
    """One message's effect inside a batch, under the policy the dead-letter middleware applies to a whole message:
    retried with backoff, then dead-lettered alone with the reason (an invalid one at once); None when lettered.

    So one message that fails costs one dead letter, never its batch, and the messages before it in the batch
    keep their effects (the batch's handler publishes what they caused).
    """
    wiring = _wiring(broker)
    attempts, backoff_s = wiring.attempts, wiring.backoff_s
    for attempt in range(1, attempts + 1):
        try:
            return await effect()
        except NOT_RETRIED as exc:
            await publish_dead_letter(broker, record, exc, service=service, attempts=1)
            return None
        except Exception as exc:
            if attempt == attempts:
                exc.add_note(f"failed {attempts} attempts")
                await publish_dead_letter(broker, record, exc, service=service, attempts=attempts)
                return None
            log.warning("message failed in its batch, retrying", attempt=attempt, error=repr(exc))
            await asyncio.sleep(backoff_s * attempt)
    return None


class Parsed(NamedTuple):
    """One consumed message that parsed: the record as fetched and its event."""

    record: Any
    event: Any


async def undecoded(message: StreamMessage[Any], decode: Any) -> Any:
    """The body as bytes (a batch: a list of them): parsing is the subscriber's, message by message."""
    return message.body


def _unparseable(value: Any) -> Exception | None:
    """FastStream hands undecodable bodies to the handler as bytes; name the real cause."""
    try:
        json.loads(value)
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError) as exc:
        return exc
    return None


def _reason(exc: Exception) -> str:
    if isinstance(exc, json.JSONDecodeError | UnicodeDecodeError | TypeError):
        return f"not JSON: {exc}"
    if isinstance(exc, ValidationError):
        errors = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '<body>'}: {e['msg']}" for e in exc.errors())
        return f"invalid {exc.title}: {errors}"[:4000]
    return f"{type(exc).__name__}: {exc}"[:4000]


def client_security(settings: KafkaSettings | None = None) -> dict[str, Any]:
    """The login every Kafka client of Flywheel passes (aiokafka's keyword arguments): SASL/SCRAM-SHA-256 as
    the principal of ``settings`` (by default ``FLYWHEEL_KAFKA_USERNAME``/``_PASSWORD``), or nothing when no
    principal is set (a PLAINTEXT broker, such as a unit test's).

    >>> client_security(KafkaSettings(username=""))
    {}
    >>> sorted(client_security(KafkaSettings(username="ingestion", password="p")))
    ['sasl_mechanism', 'sasl_plain_password', 'sasl_plain_username', 'security_protocol']
    """
    settings = settings if settings is not None else KafkaSettings()
    if not settings.username:
        return {}
    return {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-256",
        "sasl_plain_username": settings.username,
        "sasl_plain_password": settings.password.get_secret_value(),
    }


def create_broker(
    settings: KafkaSettings,
    *,
    service: str,
    registry: CollectorRegistry = REGISTRY,
    logger: Any = None,
) -> KafkaBroker:
    """A broker whose producer waits for all in-sync replicas, idempotently, and dead-letters."""
    holder: list[KafkaBroker] = []
    dead_letters = dead_letter_middleware(
        lambda: holder[0],
        service=service,
        attempts=settings.dead_letter_attempts,
        backoff_s=settings.retry_backoff_s,
    )
    prometheus = KafkaPrometheusMiddleware(registry=registry, app_name=service, metrics_prefix="flywheel")
    broker = KafkaBroker(
        # a list: FastStream takes a string for one address, and a cluster's "a:1,b:2" would be one host
        settings.bootstrap_servers.split(","),
        client_id=f"flywheel-{service}",
        security=(SASLScram256(settings.username, settings.password.get_secret_value()) if settings.username else None),
        # the launcher and compose's bootstrap make every topic up front; a service may not (its ACLs allow no
        # CREATE), so its subscribers do not try
        allow_auto_create_topics=False,
        # aiokafka and FastStream default to acks=1 without idempotence: a leader
        # crash could lose an acknowledged event or a retry could write it twice.
        acks="all",
        enable_idempotence=True,
        max_request_size=DEADLETTER_MAX_BYTES,  # a dead letter carries a whole message and its reason
        middlewares=(prometheus, dead_letters),
        logger=logger if logger is not None else structlog.get_logger(f"{service}.broker"),
        # "Received"/"Processed" for every message is debugging detail, not an operator's log.
        log_level=logging.DEBUG,
    )
    holder.append(broker)
    _WIRING[broker] = _Wiring(prometheus._metrics_manager, settings.dead_letter_attempts, settings.retry_backoff_s)
    return broker


# The range assignor gives a member that reads several topics the same partition numbers of each, so one
# replica holds all of a key's messages of topics keyed alike (the registry's decisions, monitoring's join of
# predictions and labels). Every member of a group lists it first, or the group agrees on another; round
# robin, second, is what a group of an older version still agrees on during an upgrade.
ASSIGNORS = (RangePartitionAssignor, RoundRobinPartitionAssignor)


def consumer_options(service: str, **overrides: Any) -> dict[str, Any]:
    """Subscriber options: one consumer group per service, commit only after the handler finishes."""
    options: dict[str, Any] = {
        "group_id": f"flywheel-{service}",
        "auto_offset_reset": "earliest",
        "ack_policy": AckPolicy.NACK_ON_ERROR,
        "partition_assignment_strategy": ASSIGNORS,
    }
    options.update(overrides)
    return options


async def ensure_topics(bootstrap_servers: str, names: Iterable[str] | None = None, partitions: int = 3) -> list[str]:
    """Create the catalogue's topics that are missing, with their partitions, config and as many copies as
    the cluster has brokers (up to three), and bring an existing topic's config up to the catalogue's (a
    stack made before the config was). Returns those created.
    """
    wanted = [TOPICS[n] for n in names] if names is not None else list(TOPICS.values())
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, **client_security())
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in wanted if t.name not in existing]
        if missing:
            # three copies on a cluster (its brokers' min.insync.replicas says how many a write needs)
            replication = min(3, len((await admin.describe_cluster())["brokers"]))
            await admin.create_topics(
                [NewTopic(t.name, partitions, replication, topic_configs=dict(t.config)) for t in missing]
            )
        configured = [t for t in wanted if t.config and t.name in existing]
        if configured:
            await admin.alter_configs(
                [ConfigResource(ConfigResourceType.TOPIC, t.name, dict(t.config)) for t in configured]
            )
        return [t.name for t in missing]
    finally:
        await admin.close()


def subscription(topic: Topic, service: str, **overrides: Any) -> dict[str, Any]:
    """Subscriber options for ``service`` reading ``topic``, as the catalogue declares the topic: every replica
    reads a topic the catalogue marks ``every_replica`` (for all or for this service) in full, and the
    replicas of a service share any other through its group.

    >>> from flywheel.schemas import MODELS_CHAMPION, PREDICTIONS
    >>> subscription(MODELS_CHAMPION, "serving")["group_id"], subscription(PREDICTIONS, "serving")["group_id"]
    (None, 'flywheel-serving')
    """
    if topic.read_in_full_by(service):
        return every_replica_options(**overrides)
    return consumer_options(service, **overrides)


def batch_subscription(topic: Topic, service: str, max_records: int = 500, **overrides: Any) -> dict[str, Any]:
    """Subscriber options for reading ``topic`` in batches of up to ``max_records``, bodies undecoded (the handler
    parses them with ``parse_each``, so one bad message is one dead letter), committed once per batch."""
    overrides.setdefault("batch_timeout_ms", 20)
    return {
        "batch": True,
        "max_records": max_records,
        "decoder": undecoded,
        **subscription(topic, service, **overrides),
    }


def every_replica_options(**overrides: Any) -> dict[str, Any]:
    """Subscriber options for a topic the catalogue marks ``every_replica``: each replica reads all of it.

    No consumer group, so nothing is shared and nothing committed: a replica starts from the
    topic's beginning (a compacted topic keeps each key's latest message) and folds it idempotently.
    """
    options: dict[str, Any] = {"group_id": None, "auto_offset_reset": "earliest", "ack_policy": AckPolicy.ACK_FIRST}
    options.update(overrides)
    return options


@dataclass
class _Wiring:
    """What this module keeps beside a service's broker, set when the broker is made and its publishers declared."""

    metrics: Any = None  # FastStream's Prometheus metrics, which ``publish_events`` counts in as its publish path would
    attempts: int = 1  # the dead-letter policy, which ``handle_each`` applies to one message of a batch
    backoff_s: float = 0.0
    declared: frozenset[str] | None = None  # the topics the service publishes (its AsyncAPI "send" operations)


_WIRING: weakref.WeakKeyDictionary[KafkaBroker, _Wiring] = weakref.WeakKeyDictionary()


def _wiring(broker: KafkaBroker) -> _Wiring:
    return _WIRING.get(broker) or _Wiring()


class UndeclaredTopic(RuntimeError):
    """A service published on a topic its AsyncAPI document does not declare: the topic graph would lie."""


def declare_publishers(broker: KafkaBroker, service: str, topics: Iterable[Topic]) -> list[Any]:
    """Declare what ``service`` publishes (dead letters always), so its AsyncAPI document says it.

    From then on ``publish_event`` on this broker refuses any other topic. Returns the
    FastStream publishers, which the caller keeps (the broker holds them only weakly).
    """
    declared = {t.name: t for t in (*topics, DEADLETTERS)}
    _WIRING.setdefault(broker, _Wiring()).declared = frozenset(declared)
    return [
        broker.publisher(topic.name, title=f"{topic.name}:{service}", schema=topic.event, description=topic.description)
        for topic in declared.values()
    ]


async def publish_event(broker: KafkaBroker, event: Event) -> None:
    """Publish an event on its catalogue topic, keyed as the catalogue says, as plain JSON."""
    await _publish(broker, event)


class PublishFailed(Exception):
    """Some events of a batch were not written: ``failed`` lists them, in order (the others were written)."""

    def __init__(self, failed: list[Event], cause: BaseException) -> None:
        super().__init__(f"{len(failed)} event(s) not written: {cause!r}")
        self.failed = failed


async def publish_events(broker: KafkaBroker, events: Iterable[Event]) -> None:
    """Publish many events, in order, and wait once for all their acks (acks=all).

    They are handed straight to the broker's aiokafka producer, a partition batch at a time (``_send_all``): the
    per-message path of ``broker.publish`` (its middlewares, command objects and correlation ids) costs more than
    the send itself on a busy event path. Same bytes, key, headers and partition as ``publish_event``, and counted
    in the same ``flywheel_published_messages_total``. Raises ``PublishFailed`` naming those not written, in order
    (one refused and every one after it; a batch whose hand-over or ack failed), only once every ack of those
    handed over has come. One key's events are written in their order.
    """
    events = list(events)
    for event in events:  # an undeclared topic fails the batch before any of it is sent
        _check_declared(broker, topic_for(event))
    producer = _producer_of(broker)
    outcomes = await (_publish_one_by_one(broker, events) if producer is None else _send_all(producer, events))
    _count_published(broker, [(topic_for(e).name, o) for e, o in zip(events, outcomes, strict=True)])
    failed = [(e, o) for e, o in zip(events, outcomes, strict=True) if isinstance(o, BaseException)]
    if failed:
        raise PublishFailed([e for e, _ in failed], failed[0][1]) from failed[0][1]


async def _send_all(producer: Any, events: list[Event]) -> list[Any]:
    """Hand the events to aiokafka's producer a partition batch at a time, in order, then wait for every ack:
    each one's outcome (its batch's metadata, or the exception).

    Each event is placed first, as ``send`` would place it (its partition, its size under the producer's
    limit): one that cannot be is refused, with every one after it, and none of those is handed over. A
    refused hand-over (the producer closed, no room in time) fails its batch's events and every one not yet
    handed over. A batch is built with aiokafka's batch API (``create_batch``, ``send_batch``): ``send``
    costs a coroutine, a future and a metadata wait per message.
    """
    placed, refused = await _placements(producer, events)
    open_batches: dict[tuple[str, int], _Batch] = {}
    handed: list[_Batch] = []
    not_handed: BaseException | None = None
    try:
        for index, (topic, partition, key, value, headers) in enumerate(placed):
            batch = open_batches.get((topic, partition))
            if batch is None or batch.builder.append(timestamp=None, key=key, value=value, headers=headers) is None:
                if batch is not None:  # full: handed over, and a new one started
                    handed.append(await batch.hand_over(producer))
                batch = open_batches[topic, partition] = _Batch(topic, partition, producer.create_batch())
                batch.builder.append(timestamp=None, key=key, value=value, headers=headers)  # a first one always fits
            batch.members.append(index)
        for batch in open_batches.values():
            if batch.future is None:
                handed.append(await batch.hand_over(producer))
    except Exception as exc:
        not_handed = exc
    finally:  # even when cancelled: what was handed over is waited for
        acked: list[Any] = await asyncio.gather(*(b.future for b in handed), return_exceptions=True)
    outcomes: list[Any] = [not_handed] * len(placed) + [refused] * (len(events) - len(placed))
    for batch, outcome in zip(handed, acked, strict=True):
        for index in batch.members:
            outcomes[index] = outcome
    return outcomes


async def _placements(producer: Any, events: list[Event]) -> tuple[list[tuple], BaseException | None]:
    """Each event's topic, partition, key, value and headers, up to the first that ``send`` would refuse (its
    topic unknown, or too big for the producer's request size), and why that one is refused."""
    placed: list[tuple] = []
    partitions: dict[str, list[int]] = {}
    try:
        for event in events:
            topic = topic_for(event)
            key = topic.key_of(event)
            if topic.name not in partitions:
                partitions[topic.name] = sorted(await producer.partitions_for(topic.name))
            headers = [(name, value.encode()) for name, value in _headers_of(event).items()]
            value = event.to_bytes()
            producer._serialize(key, value, headers)  # aiokafka's own size check of ``send`` (no serializers here)
            partition = _partition_for(partitions[topic.name], key, producer.client.cluster, topic.name)
            placed.append((topic.name, partition, key, value, headers))
    except Exception as exc:
        return placed, exc
    return placed, None


@dataclass
class _Batch:
    """One partition's batch of a ``_send_all`` call: its builder, and the indexes of the events in it."""

    topic: str
    partition: int
    builder: Any
    members: list[int] = field(default_factory=list)
    future: asyncio.Future | None = None

    async def hand_over(self, producer: Any) -> _Batch:
        self.builder.close()
        self.future = await producer.send_batch(self.builder, self.topic, partition=self.partition)
        return self


def _partition_for(partitions: list[int], key: bytes | None, cluster: Any, topic: str) -> int:
    """The partition aiokafka's default partitioner gives ``key`` among a topic's sorted ``partitions``; for no
    key, a random one of those with a leader (any, when none has). Its murmur2 is pure Python, so a key's hash
    is kept (``_key_hash``)."""
    if key is None:
        return random.choice(list(cluster.available_partitions_for_topic(topic)) or partitions)
    return partitions[_key_hash(key) % len(partitions)]


@functools.lru_cache(maxsize=65_536)
def _key_hash(key: bytes) -> int:
    return murmur2(key) & 0x7FFFFFFF


async def _publish_one_by_one(broker: KafkaBroker, events: list[Event]) -> list[Any]:
    """The in-memory test broker's path (FastStream's own), one event at a time; the first failure fails the rest."""
    outcomes: list[Any] = []
    for event in events:
        try:
            outcomes.append(await _publish(broker, event))
        except Exception as exc:
            return [*outcomes, *[exc] * (len(events) - len(outcomes))]
    return outcomes


def _producer_of(broker: KafkaBroker) -> Any:
    """The aiokafka producer under a started FastStream broker; None under the in-memory test broker."""
    state = getattr(broker.config.producer, "_producer", None)
    return state.producer if isinstance(state, RealProducer) else None


def _count_published(broker: KafkaBroker, outcomes: list[tuple[str, Any]]) -> None:
    metrics = _wiring(broker).metrics
    if metrics is None:
        return
    counted = collections.Counter((name, isinstance(outcome, BaseException)) for name, outcome in outcomes)
    for (name, failed), n in counted.items():
        status = PublishingStatus.error if failed else PublishingStatus.success
        metrics.add_published_message(broker="kafka", destination=name, status=status, amount=n)


def _check_declared(broker: KafkaBroker, topic: Topic) -> None:
    declared = _wiring(broker).declared
    if declared is not None and topic.name not in declared:
        raise UndeclaredTopic(f"{topic.name} is not among the topics this service declared: {sorted(declared)}")


async def _publish(broker: KafkaBroker, event: Event, **options: Any) -> Any:
    topic = topic_for(event)
    _check_declared(broker, topic)
    return await broker.publish(
        event.to_bytes(), topic=topic.name, key=topic.key_of(event), headers=_headers_of(event), **options
    )


def _headers_of(event: Event) -> dict[str, str]:
    return {
        "event_type": event.event_type,
        "schema_version": event.schema_version,
        "correlation_id": str(event.correlation_id),
        "content-type": "application/json",
    }


class SeenEvents:
    """Bounded memory of handled ids, so a redelivered message is handled once.

    ``owner`` says who claimed an id: the same owner asking again (a redelivery
    of the same event) is not a repeat, another owner is.

    >>> seen = SeenEvents(capacity=2)
    >>> seen.first_time("a"), seen.first_time("a"), seen.first_time("b"), seen.first_time("c")
    (True, False, True, True)
    >>> seen.first_time("a")  # forgotten: capacity bounds memory
    True
    >>> [seen.first_time("r1", owner=e) for e in ("e1", "e1", "e2")]
    [True, True, False]
    """

    def __init__(self, capacity: int = 100_000) -> None:
        self._ids: OrderedDict[str, str | None] = OrderedDict()
        self._capacity = capacity

    def first_time(self, key: object, owner: object = None) -> bool:
        key = str(key)
        claimant = None if owner is None else str(owner)
        if key in self._ids:
            self._ids.move_to_end(key)
            return claimant is not None and self._ids[key] == claimant
        self._ids[key] = claimant
        if len(self._ids) > self._capacity:
            self._ids.popitem(last=False)
        return True

    def forget(self, key: object) -> None:
        """Drop a claim whose effect did not happen (its publication failed), so a resend is new."""
        self._ids.pop(str(key), None)

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, key: object) -> bool:
        return str(key) in self._ids


Caused = Event | Iterable[Event] | None


def derived_id(cause: Event, index: int, event: Event) -> UUID:
    """The id of the ``index``-th event ``cause`` caused: the same on every redelivery of ``cause``.

    A handler re-run after a crash or a failed publish publishes the same ids again, so
    every consumer's dedup by ``event_id`` sees one event, not two.

    >>> from flywheel.schemas import LabelObserved
    >>> cause = LabelObserved(dataset="d", label=1)
    >>> derived_id(cause, 0, cause) == derived_id(cause, 0, cause) != derived_id(cause, 1, cause)
    True
    """
    return name_id(cause.event_id, f"{index}/{event.event_type}")


def with_derived_ids(cause: Event, events: Iterable[Event], **update: Any) -> list[Event]:
    """Stamp the events a handler of ``cause`` returned with ids derived from it, by position (and ``update``'s
    other fields, in the same copy)."""
    return [e.model_copy(update={**update, "event_id": derived_id(cause, i, e)}) for i, e in enumerate(events)]


class ExactlyOnce:
    """Effects of each event exactly once, even when its handler is retried.

    An event id is marked done only after the handler's effect happened *and* the events it
    caused were published (acks=all); until then a redelivery runs it again. The handler's
    result is kept between the two steps, so a retry after a failed publish publishes the
    same events again instead of applying the effect twice. Effects that must outlive the
    process (a registered model, a sealed version) are made idempotent by their own key
    where they are stored; this memory covers retries and redeliveries within a process.

    >>> once = ExactlyOnce(capacity=10)
    >>> calls = []
    >>> async def effect():
    ...     calls.append(1)
    ...     return []
    >>> async def twice():
    ...     from flywheel.schemas import LabelObserved
    ...     label = LabelObserved(dataset="d", label=1)
    ...     return [await once.run(label, effect, publish=None) for _ in range(2)]
    >>> asyncio.run(twice()), len(calls)
    ([[], None], 1)
    """

    def __init__(self, capacity: int = 100_000) -> None:
        self.done = SeenEvents(capacity)
        self._applied: OrderedDict[str, list[Event]] = OrderedDict()
        self._capacity = capacity

    def is_done(self, event: Event) -> bool:
        return event.event_id in self.done

    async def run(
        self,
        event: Event,
        effect: Callable[[], Awaitable[Caused] | Caused],
        publish: Callable[[Event], Awaitable[None]] | None,
        derive_ids: bool = True,
    ) -> list[Event] | None:
        """Apply ``effect`` once for ``event`` and publish what it caused; None when already done.

        ``derive_ids=False``: the effect stamps its events' ids itself (from a cause of its choosing)."""
        caused = await self.apply(event, effect, derive_ids)
        if caused is None:
            return None
        if publish is not None:
            for out in caused:
                await publish(out)
        self.mark_done(event)
        return caused

    async def apply(
        self, event: Event, effect: Callable[[], Awaitable[Caused] | Caused], derive_ids: bool = True
    ) -> list[Event] | None:
        """Apply ``effect`` once for ``event`` and return what it caused, kept until ``mark_done`` (a retry gets
        the same events back without applying it again); None when already done."""
        key = str(event.event_id)
        if key in self.done:
            return None
        if key in self._applied:  # the effect happened; only its publication failed
            return self._applied[key]
        result = effect()
        caused = _as_list(await result if inspect.isawaitable(result) else result)
        caused = with_derived_ids(event, caused) if derive_ids else caused
        self._applied[key] = caused
        if len(self._applied) > self._capacity:
            self._applied.popitem(last=False)
        return caused

    async def publish_caused(self, broker: KafkaBroker, applied: Iterable[tuple[Event, list[Event]]]) -> None:
        """Publish what events applied with ``apply`` caused, with one wait for all the acks (``publish_events``),
        and mark each done whose caused events were all written, up to the first that was not; raises
        ``PublishFailed`` for the rest."""
        applied = list(applied)
        try:
            await publish_events(broker, [out for _, caused in applied for out in caused])
        except PublishFailed as failed:
            # done: those before the first with an unwritten event. Not those after it: a key's later event written
            # before its earlier one was retried would be out of order; they are published again (same ids)
            unwritten = {id(event) for event in failed.failed}
            for event, caused in applied:
                if any(id(out) in unwritten for out in caused):
                    break
                self.mark_done(event)
            raise
        for event, _ in applied:
            self.mark_done(event)

    def applied(self, event: Event) -> bool:
        """Whether ``event``'s effect happened and what it caused still waits to be published."""
        return str(event.event_id) in self._applied

    def mark_done(self, event: Event) -> None:
        """``event``'s effect happened and what it caused is durable (published by the caller, in bulk)."""
        key = str(event.event_id)
        self._applied.pop(key, None)
        self.done.first_time(key)


def _as_list(caused: Caused) -> list[Event]:
    if caused is None:
        return []
    if isinstance(caused, Event):
        return [caused]
    return list(caused)


def exactly_once(broker: KafkaBroker, once: ExactlyOnce | None = None) -> Callable[[Any], Any]:
    """Decorate a subscriber of one event: its effect runs once, the events it returns are published.

    The subscriber stays a typed function of its event that returns what it causes; this
    wrapper dedups by ``event_id``, publishes the returned events (ids derived from the
    cause), and only then lets the message be committed. A failure propagates, so the
    dead-letter middleware retries it with backoff and finally dead-letters it.
    """
    memory = once or ExactlyOnce()

    def decorate(handler: Callable[..., Awaitable[Caused]]) -> Callable[..., Awaitable[None]]:
        @functools.wraps(handler)
        async def wrapper(*args: Any, **kwargs: Any) -> None:
            event = next(a for a in (*args, *kwargs.values()) if isinstance(a, Event))
            await memory.run(event, lambda: handler(*args, **kwargs), lambda e: publish_event(broker, e))

        # FastStream reads the event type from this signature; the wrapper itself returns nothing.
        wrapper.__signature__ = inspect.signature(handler, eval_str=True).replace(return_annotation=None)  # type: ignore[attr-defined]
        return wrapper

    return decorate


__all__ = [
    "DEADLETTERS",
    "ExactlyOnce",
    "InvalidMessage",
    "SeenEvents",
    "UndeclaredTopic",
    "consumer_options",
    "create_broker",
    "dead_letter",
    "declare_publishers",
    "derived_id",
    "ensure_topics",
    "every_replica_options",
    "exactly_once",
    "parse_each",
    "publish_event",
    "publish_letter",
    "subscription",
    "undecoded",
    "with_derived_ids",
]
