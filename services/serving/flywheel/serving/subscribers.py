"""Serving's Kafka side: rollouts start on approvals, champions follow the registry,
labels judge rollouts, and prediction requests are scored in micro-batches."""

from __future__ import annotations

from collections import defaultdict
from typing import Any
from uuid import UUID

from aiokafka import ConsumerRebalanceListener
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage

from flywheel.common.championmoves import ChampionMoves
from flywheel.common.contracts import DataContract, label_refusal
from flywheel.common.kafka import (
    ExactlyOnce,
    InvalidMessage,
    batch_subscription,
    dead_letter,
    exactly_once,
    handle_each,
    parse_each,
    publish_event,
    publish_letter,
    subscription,
    with_derived_ids,
)
from flywheel.common.tracking import Registered
from flywheel.schemas import (
    FEATURES_ONLINE,
    MODELS_APPROVED,
    MODELS_CHAMPION,
    MODELS_ROLLOUT,
    PREDICTIONS_LABELLED,
    PREDICTIONS_REQUESTS,
    ChampionChanged,
    Event,
    FeaturesComputed,
    MessageDeadLettered,
    ModelApproved,
    PredictionLabelled,
    PredictionRequested,
    RolloutStepped,
)
from flywheel.serving.answers import prediction_id
from flywheel.serving.engine import Engine
from flywheel.serving.models import inputs_violations
from flywheel.serving.onlineview import OnlineView
from flywheel.serving.onlineview import refusals as view_refusals


async def _anything_registered(name: str, version: str) -> bool:
    return True


def register_subscribers(
    broker: KafkaBroker,
    engine: Engine,
    model_of_dataset: dict[str, str],
    once: ExactlyOnce | None = None,
    *,
    contracts: dict[str, DataContract] | None = None,
    registered: Registered = _anything_registered,
    moves: ChampionMoves,
    ownership: ConsumerRebalanceListener | None = None,
) -> Any:
    """Wire serving's subscribers; returns the one of ``predictions.labelled`` (where it began reading is
    where a restart's catch-up of missed labels stops)."""
    once = once or ExactlyOnce()
    contracts = contracts or {}

    # the replica given a model's partition runs its rollouts: ``ownership`` resumes them on each assignment
    @broker.subscriber(MODELS_APPROVED.name, **subscription(MODELS_APPROVED, "serving"), listener=ownership)
    @exactly_once(broker, once)
    async def on_model_approved(approved: ModelApproved) -> None:
        """Roll an approved challenger out against the champion (its steps are published as they happen)."""
        name, version = approved.model_name, approved.version
        if name not in engine.champions and not await registered(name, version):
            raise InvalidMessage(f"version {version!r} of model {name!r} is not in the registry")
        await engine.start_rollout(approved)

    @broker.subscriber(MODELS_CHAMPION.name, **subscription(MODELS_CHAMPION, "serving"))
    async def on_champion_changed(change: ChampionChanged, message: KafkaMessage) -> None:
        """Serve the registry's champion of a model served here: the first one, a promotion, or a rollback.

        Every replica reads every move. Those written before it loaded its champions at start are
        skipped (the registry's state it loaded reflects them); any later one is checked against the
        registry, and only the version its ``champion`` alias names now is served. A move the registry
        never made changes nothing. A model not held here is loaded with its champion of the moment by
        the next request that names it.
        """
        if not await moves.to_follow(change, message.raw_message.partition, message.raw_message.offset):
            return
        if change.model_name in engine.champions or change.model_name in model_of_dataset.values():
            await engine.use_champion(change)
        else:
            engine.forget_miss(change.model_name)

    # from the end: a rollout that started before this replica did is loaded at its promotion
    @broker.subscriber(MODELS_ROLLOUT.name, **subscription(MODELS_ROLLOUT, "serving", auto_offset_reset="latest"))
    async def on_rollout_stepped(step: RolloutStepped) -> None:
        """Every replica loads the candidate of a rollout as it starts, wherever it runs, so that a promotion
        reaches all of them as fast as the one that ran it."""
        await engine.prefetch(step)

    # from the end: a replica judges the rollouts it runs, and its champion's guard, from the labels after it
    # starts; a rollout resumed after a restart is given those it missed up to there (catchup.py)
    labelled = broker.subscriber(
        PREDICTIONS_LABELLED.name, **subscription(PREDICTIONS_LABELLED, "serving", auto_offset_reset="latest")
    )

    @labelled
    @exactly_once(broker, once)
    async def on_prediction_labelled(labelled: PredictionLabelled) -> None:
        """Credit a late label to the variants that answered, on whichever replica they did."""
        if (refusal := label_refusal(contracts, labelled)) is not None:
            raise InvalidMessage(refusal)
        engine.on_labelled(labelled)

    @broker.subscriber(
        PREDICTIONS_REQUESTS.name, **batch_subscription(PREDICTIONS_REQUESTS, "serving", batch_timeout_ms=5)
    )
    async def on_prediction_requested(bodies: list[bytes], message: KafkaMessage) -> None:
        """Score a micro-batch of requests; each answer (or dead letter) is published before the commit.

        Each message is parsed and checked on its own: one that is no request, or that no champion
        can answer, is dead-lettered with its bytes and reason and the rest are answered. A request
        is marked done only after its answers are published, so a batch retried after a failure
        scores only what was not answered, and its prediction ids (derived from the request) are
        the same again.
        """
        asked: dict[str, list[tuple[Any, PredictionRequested]]] = defaultdict(list)
        in_batch: set[UUID] = set()
        for record, request in await parse_each(broker, PREDICTIONS_REQUESTS, bodies, message, service="serving"):
            if once.is_done(request) or request.event_id in in_batch:  # a redelivery: answered once
                continue
            in_batch.add(request.event_id)
            name = request.model_name or model_of_dataset.get(request.dataset)
            if name is None or not await engine.find_champion(name):  # nothing can answer it: never a silent drop
                await refuse(record, request, f"no champion serves model {name!r} of dataset {request.dataset!r}")
                continue
            asked[name].append((record, request))
        by_model: dict[str, list[PredictionRequested]] = defaultdict(list)
        for name, requests in asked.items():  # each model's requests checked together, a column at a time
            champion = engine.champions[name]
            checked = inputs_violations(champion, contracts.get(champion.dataset), [r.data for _, r in requests])
            for (record, request), invalid in zip(requests, checked, strict=True):
                if invalid:
                    await refuse(record, request, f"invalid inputs: {'; '.join(v.message for v in invalid[:5])}")
                else:
                    by_model[name].append(request)
        for name, batch in by_model.items():
            # a retried batch publishes the answers its first try gave (kept by ``once``), never new ones
            fresh = [r for r in batch if not once.applied(r)]
            caused = score(name, fresh) if fresh else {}
            answered = [
                (r, await once.apply(r, lambda r=r, caused=caused: caused[r.event_id], derive_ids=False) or [])
                for r in batch
            ]
            # published together, with one wait for all their acks: one at a time held the stream at one broker
            # round trip per request; sent in order, so one entity's answers (its key's) stay in their order
            await once.publish_caused(broker, answered)

    def score(name: str, batch: list[PredictionRequested]) -> dict[UUID, list[Event]]:
        """Each request's answers (served, and a shadow's), enveloped as caused by it, with ids derived from it."""
        keys = [str(r.event_id) for r in batch]
        served, logged = engine.score(name, [r.data for r in batch], [r.request_id for r in batch], keys=keys)
        # the served answers come in the requests' order; a shadow's ids (each a hash) only when it answered too
        owner = {answer.prediction_id: r for answer, r in zip(served, batch, strict=True)}
        if any(not entry.served for entry in logged):
            owner |= {prediction_id(k, "shadow"): r for k, r in zip(keys, batch, strict=True)}
        answers: dict[UUID, list[Event]] = defaultdict(list)
        for entry in logged:
            answers[owner[entry.prediction_id].event_id].append(entry)
        return {r.event_id: with_derived_ids(r, answers[r.event_id], **r.caused()) for r in batch}

    async def refuse(record: Any, request: PredictionRequested, reason: str) -> None:
        """Dead-letter one request with its bytes as received, once (a retried batch does not repeat it)."""
        letter = dead_letter(record, InvalidMessage(reason), service="serving")
        await once.run(request, lambda: letter.model_copy(update=request.caused()), send)

    async def send(event: Event) -> None:
        if isinstance(event, MessageDeadLettered):
            await publish_letter(broker, event)
        else:
            await publish_event(broker, event)

    return labelled


def register_view_subscriber(broker: KafkaBroker, view: OnlineView, contracts: dict[str, DataContract]) -> None:
    """Every replica folds all of ``features.online`` into its own view of the online store, a batch at a time."""

    @broker.subscriber(FEATURES_ONLINE.name, **batch_subscription(FEATURES_ONLINE, "serving"))
    async def on_features_computed(bodies: list[bytes], message: KafkaMessage) -> None:
        """Keep each entity's latest vector (an older one never replaces a newer one); an absurd
        vector is dead-lettered with its reason, never answered from."""
        parsed = await parse_each(broker, FEATURES_ONLINE, bodies, message, service="serving")
        refused = view_refusals([vector for _, vector in parsed], contracts)  # checked a batch at a time
        for (raw, vector), why in zip(parsed, refused, strict=True):
            await handle_each(broker, raw, lambda vector=vector, why=why: fold(vector, why), service="serving")

    async def fold(vector: FeaturesComputed, why: str | None) -> None:
        if why is not None:
            raise InvalidMessage(why)
        view.apply(vector)
