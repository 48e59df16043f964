"""``_send_all`` against a stand-in producer: where each event goes, and what fails with what."""

import asyncio

import pytest
from aiokafka.errors import KafkaTimeoutError, MessageSizeTooLargeError, NotLeaderForPartitionError
from aiokafka.partitioner import DefaultPartitioner

from flywheel.common.kafka import _send_all
from flywheel.schemas import RECORDS_REJECTED, RecordRejected, Violation

PARTITIONS = [0, 1, 2]


def rejected(key: int, n: int, size: int = 0, run: str = "r") -> RecordRejected:
    """The ``n``-th event of key ``key`` (record ``{run}-{key}``), padded by ``size`` characters."""
    return RecordRejected(
        producer="t",
        dataset="d",
        record_id=f"{run}-{key}",
        data={"n": n, "padding": "x" * size},
        violations=[Violation(column="n", rule="range", message="a test record")],
    )


class Batch:
    def __init__(self, room: int) -> None:
        self.values: list[bytes] = []
        self.room, self.closed = room, False

    def append(self, *, timestamp, key, value, headers):
        if self.closed or len(self.values) == self.room:
            return None
        self.values.append(value)
        return object()

    def close(self) -> None:
        self.closed = True


class Cluster:
    def available_partitions_for_topic(self, topic: str) -> set[int]:
        return set(PARTITIONS)


class Producer:
    """Batches of ``room`` events; hand-overs refused from the ``refuse_from``-th on; acks failed on ``failing``."""

    def __init__(self, room: int = 4, refuse_from: int | None = None, failing: int | None = None) -> None:
        self.room, self.refuse_from, self.failing = room, refuse_from, failing
        self.sent: list[tuple[int, list[bytes]]] = []
        self.client = type("Client", (), {"cluster": Cluster()})()

    async def partitions_for(self, topic: str) -> set[int]:
        return set(PARTITIONS)

    def _serialize(self, key: bytes, value: bytes, headers: list) -> tuple[bytes, bytes]:
        if len(value) > 10_000:
            raise MessageSizeTooLargeError("too big")
        return key, value

    def create_batch(self) -> Batch:
        return Batch(self.room)

    async def send_batch(self, batch: Batch, topic: str, *, partition: int) -> asyncio.Future:
        if self.refuse_from is not None and len(self.sent) >= self.refuse_from:
            raise KafkaTimeoutError()
        self.sent.append((partition, batch.values))
        ack = asyncio.get_running_loop().create_future()
        if partition == self.failing:
            ack.set_exception(NotLeaderForPartitionError())
        else:
            ack.set_result(partition)
        return ack


def n_of(value: bytes) -> tuple[str, int]:
    event = RecordRejected.model_validate_json(value)
    return event.record_id, event.data["n"]


async def test_each_event_goes_once_to_its_keys_partition_in_its_order():
    events = [rejected(i % 7, i // 7) for i in range(70)]
    producer = Producer()
    outcomes = await _send_all(producer, events)
    assert not any(isinstance(o, BaseException) for o in outcomes)
    landed: dict[str, list[int]] = {}
    for partition, values in producer.sent:
        assert len(values) <= producer.room
        for record_id, n in map(n_of, values):
            key = RECORDS_REJECTED.key_of(rejected(int(record_id[2:]), 0))
            assert (
                partition == DefaultPartitioner()(key, PARTITIONS, PARTITIONS) == outcomes[n * 7 + int(record_id[2:])]
            )
            landed.setdefault(record_id, []).append(n)
    assert landed == {f"r-{k}": list(range(10)) for k in range(7)}


async def test_an_event_send_would_refuse_fails_with_every_one_after_it_and_none_of_them_is_sent():
    events = [rejected(i % 3, i) for i in range(10)]
    events[6] = rejected(0, 6, size=20_000)
    producer = Producer()
    outcomes = await _send_all(producer, events)
    assert [isinstance(o, MessageSizeTooLargeError) for o in outcomes] == [False] * 6 + [True] * 4
    assert sorted(n for _, values in producer.sent for _, n in map(n_of, values)) == list(range(6))


async def test_a_refused_hand_over_fails_its_batch_and_every_event_not_handed_over():
    events = [rejected(0, i) for i in range(10)]  # one key: batches of 4, the second refused
    producer = Producer(refuse_from=1)
    outcomes = await _send_all(producer, events)
    assert [isinstance(o, KafkaTimeoutError) for o in outcomes] == [False] * 4 + [True] * 6
    assert [n for _, values in producer.sent for _, n in map(n_of, values)] == [0, 1, 2, 3]


async def test_a_failed_ack_fails_only_the_events_of_its_batches():
    events = [rejected(i % 5, i) for i in range(20)]
    partition_of = [DefaultPartitioner()(RECORDS_REJECTED.key_of(e), PARTITIONS, PARTITIONS) for e in events]
    failing = partition_of[0]
    outcomes = await _send_all(Producer(failing=failing), events)
    assert [isinstance(o, NotLeaderForPartitionError) for o in outcomes] == [p == failing for p in partition_of]


@pytest.mark.parametrize("room", [1, 3, 100])
async def test_every_event_has_one_outcome_whatever_the_batch_size(room: int):
    events = [rejected(i % 4, i) for i in range(13)]
    producer = Producer(room=room)
    outcomes = await _send_all(producer, events)
    assert len(outcomes) == 13 and sum(len(v) for _, v in producer.sent) == 13
