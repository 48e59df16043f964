"""Rebuilding the monitors after a restart from the topics they fold.

A monitor's windows and error stream live in memory. Its inputs, ``predictions`` and
``predictions.labelled`` (the one join's output), are retained topics, and the ``flywheel-monitoring`` group
commits an offset only after its handler applied the message and published what it caused.
So before the subscribers start, the messages up to the committed offsets are folded in again,
in the order they were written (by timestamp across the two topics), and what they cause is
dropped: it was published before the crash. The subscribers then resume at the committed
offsets, and a message handled but not committed before the crash is handled again, its
events re-published with the same derived ids. Nothing is counted twice or lost.

``last`` bounds the replay per partition: counters then start from that much history, the
windows (at most ``window_size``) and recent labelled answers are whole.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import structlog
from pydantic import ValidationError

from flywheel.common.contracts import DataContract
from flywheel.common.history import committed_offsets, read_history
from flywheel.monitoring.validation import refusal
from flywheel.monitoring.watch import Watch
from flywheel.schemas import PREDICTIONS, PREDICTIONS_LABELLED, PredictionLabelled, PredictionMade

log = structlog.get_logger(__name__)


@dataclass
class Rebuilt:
    predictions: int = 0
    labels: int = 0
    seconds: float = 0.0


async def rebuild(
    bootstrap_servers: str, group_id: str, watch: Watch, last: int, contracts: dict[str, DataContract]
) -> Rebuilt:
    """Fold what ``group_id`` had acknowledged on both topics back into ``watch`` (not what it dead-lettered)."""
    started = time.monotonic()
    history: list[tuple[int, int, PredictionMade | PredictionLabelled]] = []
    sources = ((PREDICTIONS.name, PredictionMade), (PREDICTIONS_LABELLED.name, PredictionLabelled))
    for order, (topic, schema) in enumerate(sources):
        upto = await committed_offsets(bootstrap_servers, group_id, topic)
        async for message in read_history(bootstrap_servers, topic, upto=upto, last=last):
            try:
                event = schema.model_validate_json(message.value)
            except ValidationError:
                continue  # dead-lettered when it was first consumed
            if isinstance(event, PredictionLabelled) or refusal(event, contracts) is None:  # else dead-lettered
                history.append((message.timestamp, order, event))
    history.sort(key=lambda item: item[:2])  # a prediction before a label written in the same millisecond
    done = Rebuilt()
    # each at the time it was written: a drift replayed asked for its retrain then, not at this restart (a
    # request marked now would hold back the next real drift's for the cooldown)
    for timestamp, _, event in history:
        if isinstance(event, PredictionMade):
            await watch.on_prediction(event, timestamp / 1000)
            done.predictions += 1
        else:
            await watch.on_labelled(event, timestamp / 1000)
            done.labels += 1
    done.seconds = round(time.monotonic() - started, 3)
    return done
