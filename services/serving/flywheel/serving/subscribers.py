"""Serving's Kafka side: rollouts start on approvals, champions follow the registry,
labels judge rollouts, and prediction requests are scored in micro-batches."""

from __future__ import annotations

import base64
from collections import defaultdict
from uuid import UUID

from faststream.kafka import KafkaBroker

from flywheel.common.kafka import ExactlyOnce, consumer_options, exactly_once, publish_event
from flywheel.schemas import (
    LABELS,
    MODELS_APPROVED,
    MODELS_CHAMPION,
    PREDICTIONS_REQUESTS,
    ChampionChanged,
    Event,
    LabelObserved,
    MessageDeadLettered,
    ModelApproved,
    PredictionRequested,
)
from flywheel.serving.answers import ROLES, prediction_id
from flywheel.serving.engine import Engine


def unservable(request: PredictionRequested, reason: str) -> MessageDeadLettered:
    """A request nothing here can answer, as a dead letter with the reason."""
    return MessageDeadLettered(
        producer="serving",
        source_topic=PREDICTIONS_REQUESTS.name,
        consumer_group="serving",
        reason=reason,
        error_type="NoChampion",
        original_key=base64.b64encode(request.request_id.encode()).decode(),
        original_value=base64.b64encode(request.to_bytes()).decode(),
        **request.caused(),
    )


def register_subscribers(
    broker: KafkaBroker, engine: Engine, model_of_dataset: dict[str, str], once: ExactlyOnce | None = None
) -> None:
    once = once or ExactlyOnce()

    @broker.subscriber(MODELS_APPROVED.name, **consumer_options("serving"))
    @exactly_once(broker, once)
    async def on_model_approved(approved: ModelApproved) -> None:
        """Roll an approved challenger out against the champion (its steps are published as they happen)."""
        await engine.start_rollout(approved)

    @broker.subscriber(MODELS_CHAMPION.name, **consumer_options("serving"))
    async def on_champion_changed(change: ChampionChanged) -> None:
        """Serve the registry's champion of any model: the first one, a promotion, or a rollback."""
        await engine.use_champion(change)

    @broker.subscriber(LABELS.name, **consumer_options("serving"))
    @exactly_once(broker, once)
    async def on_label_observed(label: LabelObserved) -> None:
        """Credit a late label to the variant that answered."""
        engine.on_label(label)

    @broker.subscriber(
        PREDICTIONS_REQUESTS.name, batch=True, max_records=500, **consumer_options("serving", batch_timeout_ms=5)
    )
    async def on_prediction_requested(requests: list[PredictionRequested]) -> None:
        """Score a micro-batch of requests; each answer (or dead letter) is published before the commit.

        A request is marked done only after its answers are published, so a batch retried
        after a failure scores only what was not answered, and its prediction ids (derived
        from the request) are the same again.
        """
        by_model: dict[str, list[PredictionRequested]] = defaultdict(list)
        for request in requests:
            if once.is_done(request):
                continue
            name = request.model_name or model_of_dataset.get(request.dataset)
            if name is not None and await engine.find_champion(name):
                by_model[name].append(request)
            else:  # nothing can answer it: a dead letter with the reason, never a silent drop
                reason = f"no champion serves model {name!r} of dataset {request.dataset!r}"
                await once.run(request, lambda r=request, why=reason: unservable(r, why), send)
        for name, batch in by_model.items():
            keys = [str(r.event_id) for r in batch]
            _, logged = engine.score(name, [r.data for r in batch], [r.request_id for r in batch], keys=keys)
            owner = {prediction_id(k, role): r for k, r in zip(keys, batch, strict=True) for role in ROLES}
            caused: dict[UUID, list[Event]] = defaultdict(list)
            for entry in logged:
                request = owner[entry.prediction_id]
                caused[request.event_id].append(entry.model_copy(update=request.caused()))
            for request in batch:
                await once.run(request, lambda answers=caused[request.event_id]: answers, send)

    async def send(event: Event) -> None:
        await publish_event(broker, event)
