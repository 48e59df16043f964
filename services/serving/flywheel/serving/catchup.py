"""After a restart: the labels a resumed rollout's judge missed, read again from ``predictions.labelled``.

A resumed rollout starts from the figures its last ``models.rollout`` event carried (``rollouts.py``). Its
subscriber of ``predictions.labelled`` reads from the end, from the moment this replica started; the labels
joined between that event and then are read here, up to where the subscriber has got to, so none is missed.
Both go through one ``ExactlyOnce``: a label read by both is credited once.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import structlog

from flywheel.common.contracts import DataContract, label_refusal
from flywheel.common.history import read_history
from flywheel.common.kafka import ExactlyOnce
from flywheel.schemas import PREDICTIONS_LABELLED, PredictionLabelled
from flywheel.serving.engine import Engine

log = structlog.get_logger(__name__)


async def subscriber_positions(subscriber: Any, timeout_s: float = 60.0) -> dict[int, int]:
    """The offsets the running subscriber reads next, once it has its partitions (all of them: no group)."""
    deadline = time.monotonic() + timeout_s
    while subscriber.consumer is None or not subscriber.consumer.assignment():
        if time.monotonic() > deadline:
            raise TimeoutError(f"the subscriber of {PREDICTIONS_LABELLED.name} was given no partition")
        await asyncio.sleep(0.05)
    consumer = subscriber.consumer
    return {tp.partition: await consumer.position(tp) for tp in consumer.assignment()}


async def credit_missed_labels(
    bootstrap_servers: str,
    subscriber: Any,
    engine: Engine,
    once: ExactlyOnce,
    since: dict[str, float],
    contracts: dict[str, DataContract],
) -> int:
    """Credit to each resumed rollout (model -> its last event's time, in epoch seconds) the labels joined
    after that time that the subscriber did not read; how many."""
    if not since:
        return 0
    started, credited = time.monotonic(), 0
    upto = await subscriber_positions(subscriber)
    after_ms = {name: int(at * 1000) for name, at in since.items()}
    history = read_history(bootstrap_servers, PREDICTIONS_LABELLED.name, upto=upto, since_ms=min(after_ms.values()))
    async for message in history:
        try:
            labelled = PREDICTIONS_LABELLED.parse(message.value)
        except ValueError:
            continue  # dead-lettered when the subscribers first read it
        if not isinstance(labelled, PredictionLabelled) or label_refusal(contracts, labelled) is not None:
            continue
        if message.timestamp < after_ms.get(labelled.model_name, 2**62):
            continue  # in the figures of the rollout's last event already, or of a model not resumed
        if await once.run(labelled, lambda labelled=labelled: engine.credit_missed(labelled), None) is not None:
            credited += 1
    log.info(
        "missed labels credited", models=sorted(since), labels=credited, seconds=round(time.monotonic() - started, 3)
    )
    return credited
