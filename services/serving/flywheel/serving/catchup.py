"""The labels a resumed rollout's judge missed, read again from ``predictions.labelled``.

A replica resumes a rollout after a restart, or when the group gives it the model's partition of
``models.approved`` (``ownership.py``). The rollout starts from the figures its last ``models.rollout``
event carried (``rollouts.py``); the labels joined since then were read by no judge of it (or by one
that is gone). They are read here, from that event's time up to where the subscriber of
``predictions.labelled`` has got to once the rollout runs here: the subscriber credits every label
after that. The rollout credits each label once, so one read by both counts once.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import structlog

from flywheel.common.contracts import DataContract, label_refusal
from flywheel.common.history import read_history
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
        credited += engine.credit_missed(labelled)
    log.info(
        "missed labels credited", models=sorted(since), labels=credited, seconds=round(time.monotonic() - started, 3)
    )
    return credited
