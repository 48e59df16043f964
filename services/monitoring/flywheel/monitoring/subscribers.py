"""Monitoring's Kafka side: predictions, labels and champion changes in; drift and alerts out."""

from __future__ import annotations

from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage

from flywheel.common.championmoves import ChampionMoves
from flywheel.common.contracts import DataContract
from flywheel.common.kafka import (
    ExactlyOnce,
    InvalidMessage,
    exactly_once,
    publish_event,
    subscription,
    with_derived_ids,
)
from flywheel.common.tracking import Registered
from flywheel.monitoring.validation import label_refusal, prediction_refusal
from flywheel.monitoring.watch import Watch
from flywheel.schemas import (
    LABELS,
    MODELS_CHAMPION,
    MODELS_REJECTED,
    MODELS_ROLLOUT,
    PREDICTIONS,
    ChampionChanged,
    Event,
    LabelObserved,
    ModelRejected,
    PredictionMade,
    RolloutStepped,
)

IN_VAIN = frozenset({"rolled_back", "inconclusive", "aborted"})  # a rollout's ends that keep the champion


def register_subscribers(
    broker: KafkaBroker,
    watch: Watch,
    once: ExactlyOnce | None = None,
    *,
    contracts: dict[str, DataContract],
    registered: Registered,
    moves: ChampionMoves,
) -> None:
    once = once or ExactlyOnce()

    @broker.subscriber(PREDICTIONS.name, **subscription(PREDICTIONS, "monitoring"))
    @exactly_once(broker, once)
    async def on_prediction_made(prediction: PredictionMade) -> list[Event]:
        """Add a served prediction to its model's window; publish drift and alerts it reveals."""
        if (refusal := prediction_refusal(prediction, contracts)) is not None:
            raise InvalidMessage(refusal)
        return await watch.on_prediction(prediction)

    @broker.subscriber(LABELS.name, **subscription(LABELS, "monitoring"))
    @exactly_once(broker, once)
    async def on_label_observed(label: LabelObserved) -> list[Event]:
        """Join a late label to its prediction; publish concept drift and accuracy alerts."""
        if (refusal := label_refusal(contracts, label)) is not None:
            raise InvalidMessage(refusal)
        return await watch.on_label(label)

    owed: list[Event] = []  # verdicts a move caused, not yet published: the next try publishes them first

    @broker.subscriber(MODELS_CHAMPION.name, **subscription(MODELS_CHAMPION, "monitoring"))
    async def on_champion_changed(change: ChampionChanged, message: KafkaMessage) -> None:
        """Judge traffic against the new champion's training data from now on.

        Every replica reads every move. Those written before its monitors were rebuilt at start are
        skipped (references load the registry's champion of that moment); of the later ones, only
        the version the registry's ``champion`` alias names now replaces a reference. The new
        champion's answers that came before its reference are judged then; what they reveal is
        published with ids derived from the answer that filled each check (each replica judges its
        own answers), kept until published should publishing fail.
        """
        followed = await moves.to_follow(change, message.raw_message.partition, message.raw_message.offset)
        if followed and not watch.judges_against(change.model_name, change.version):
            for prediction, events in await watch.on_champion_changed(change):
                owed.extend(with_derived_ids(prediction, events))
        while owed:
            await publish_event(broker, owed[0])
            owed.pop(0)

    @broker.subscriber(MODELS_REJECTED.name, **subscription(MODELS_REJECTED, "monitoring"))
    async def on_model_rejected(rejection: ModelRejected) -> None:
        """A rejected candidate: a retrain asked for its model was in vain."""
        if rejection.version is not None and not await registered(rejection.model_name, rejection.version):
            raise InvalidMessage(f"version {rejection.version!r} of {rejection.model_name!r} is not in the registry")
        watch.on_candidate_ended(rejection.model_name, rejection.version, f"rejected: {rejection.failed_gates}")

    @broker.subscriber(MODELS_ROLLOUT.name, **subscription(MODELS_ROLLOUT, "monitoring"))
    async def on_rollout(step: RolloutStepped) -> None:
        """A rollout that ended without promoting its candidate: a retrain asked for its model was in vain."""
        if step.action not in IN_VAIN:
            return
        # an aborted candidate may never have loaded, nor be registered; a rolled-back one was served
        if step.action != "aborted" and not await registered(step.model_name, step.candidate_version):
            raise InvalidMessage(f"version {step.candidate_version!r} of {step.model_name!r} is not in the registry")
        watch.on_candidate_ended(step.model_name, step.candidate_version, f"rollout {step.action}")
