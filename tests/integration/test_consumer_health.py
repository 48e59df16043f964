"""A service whose Kafka consumer stalls fails its /health, on the real broker.

After a broker restart, aiokafka once ended a consumer's group coordination for good
(aio-libs/aiokafka#1038) while the broker still answered pings: the service read nothing more and
its /health said ok. The check now looks at the consumer itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid

from flywheel.common.kafka import create_broker
from flywheel.common.service import consumers_check, stalled_consumers
from flywheel.common.settings import KafkaSettings
from flywheel.schemas import ALERTS


async def test_a_consumer_whose_group_coordination_ended_fails_the_health_check(kafka: KafkaSettings):
    broker = create_broker(kafka, service="health-test")

    @broker.subscriber(ALERTS.name, group_id=f"health-test-{uuid.uuid4().hex[:8]}", auto_offset_reset="latest")
    async def ignore(body: bytes) -> None:
        del body

    check = consumers_check(broker)
    assert await check()  # not started: nothing stalled
    await broker.start()
    try:
        [subscriber] = broker.subscribers
        deadline = asyncio.get_running_loop().time() + 30
        while not subscriber.consumer.assignment():  # in its group, partitions assigned
            assert asyncio.get_running_loop().time() < deadline, "the consumer never joined its group"
            await asyncio.sleep(0.2)
        assert await check() and stalled_consumers(broker) == []
        coordination = subscriber.consumer._coordinator._coordination_task
        coordination.cancel()  # what aiokafka#1038 left behind: the routine over, the connection fine
        with contextlib.suppress(asyncio.CancelledError):
            await coordination
        assert await broker.ping(2.0), "the broker connection still answers: the old check saw nothing"
        assert not await check()
        assert stalled_consumers(broker) == [ALERTS.name]
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(broker.stop(), 30)
