"""Serving's Kafka side: rollouts start on approvals, champions follow the registry,
labels judge rollouts, and prediction requests are scored in micro-batches."""

from __future__ import annotations

import base64
from collections import defaultdict

from faststream.kafka import KafkaBroker

from flywheel.common.kafka import SeenEvents, consumer_options, publish_event
from flywheel.schemas import (
    LABELS,
    MODELS_APPROVED,
    MODELS_CHAMPION,
    PREDICTIONS_REQUESTS,
    ChampionChanged,
    LabelObserved,
    MessageDeadLettered,
    ModelApproved,
    PredictionMade,
    PredictionRequested,
)
from flywheel.serving.engine import Engine


def register_subscribers(broker: KafkaBroker, engine: Engine, model_of_dataset: dict[str, str]) -> None:
    seen = SeenEvents()

    async def dead_letter(request: PredictionRequested, reason: str) -> None:
        letter = MessageDeadLettered(
            producer="serving",
            source_topic=PREDICTIONS_REQUESTS.name,
            consumer_group="serving",
            reason=reason,
            error_type="NoChampion",
            original_key=base64.b64encode(request.request_id.encode()).decode(),
            original_value=base64.b64encode(request.to_bytes()).decode(),
            **request.caused(),
        )
        await publish_event(broker, letter)

    @broker.subscriber(MODELS_APPROVED.name, **consumer_options("serving"))
    async def on_model_approved(approved: ModelApproved) -> None:
        """Roll an approved challenger out against the champion."""
        if seen.first_time(approved.event_id):
            await engine.start_rollout(approved)

    @broker.subscriber(MODELS_CHAMPION.name, **consumer_options("serving"))
    async def on_champion_changed(change: ChampionChanged) -> None:
        """Serve the registry's champion of any model: the first one, a promotion, or a rollback."""
        await engine.use_champion(change.model_name, change.version)

    @broker.subscriber(LABELS.name, **consumer_options("serving"))
    async def on_label_observed(label: LabelObserved) -> None:
        """Credit a late label to the variant that answered."""
        engine.on_label(label)

    @broker.subscriber(
        PREDICTIONS_REQUESTS.name, batch=True, max_records=500, **consumer_options("serving", batch_timeout_ms=5)
    )
    async def on_prediction_requested(requests: list[PredictionRequested]) -> None:
        """Score a micro-batch of requests; each answer is published to ``predictions``."""
        by_model: dict[str, list[PredictionRequested]] = defaultdict(list)
        for request in requests:
            if not seen.first_time(request.event_id):
                continue
            name = request.model_name or model_of_dataset.get(request.dataset)
            if name is not None and await engine.find_champion(name):
                by_model[name].append(request)
            else:  # nothing can answer it: a dead letter with the reason, never a silent drop
                await dead_letter(request, f"no champion serves model {name!r} of dataset {request.dataset!r}")
        for name, batch in by_model.items():
            answers: list[PredictionMade] = []
            engine.score(name, [r.data for r in batch], [r.request_id for r in batch], sink=answers)
            for answer in answers:  # published before the batch's offsets are committed
                await publish_event(broker, answer)
