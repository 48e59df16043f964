"""Monitoring's Kafka side: predictions, labels, labelled predictions and champion changes in; drift, alerts
and the one join of predictions and labels (``predictions.labelled``) out.

The join's state is ``join.py``; its rebuild when the group gives a replica partitions, ``joining.py``.
"""

from __future__ import annotations

from typing import Any

from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage

from flywheel.common.championmoves import ChampionMoves
from flywheel.common.contracts import DataContract
from flywheel.common.kafka import (
    ExactlyOnce,
    InvalidMessage,
    batch_subscription,
    exactly_once,
    handle_each,
    publish_event,
    subscription,
    with_derived_ids,
)
from flywheel.common.tracking import Registered
from flywheel.monitoring.join import LabelJoin
from flywheel.monitoring.joining import Remembering
from flywheel.monitoring.metrics import observe_join
from flywheel.monitoring.validation import refusal
from flywheel.monitoring.watch import Watch
from flywheel.schemas import (
    LABELS,
    MODELS_CHAMPION,
    MODELS_REJECTED,
    MODELS_ROLLOUT,
    PREDICTIONS,
    PREDICTIONS_LABELLED,
    ChampionChanged,
    Event,
    LabelObserved,
    ModelRejected,
    PredictionLabelled,
    PredictionMade,
    RolloutStepped,
)

JOINED = {topic.name: topic for topic in (PREDICTIONS, LABELS)}
# The broker holds a fetch of answers and labels until it has this much for it or this long has passed: at a
# few hundred answers a second, a batch of ~30 rather than one, whose handling, commit and fetch cost the same
# CPU per batch as one answer's (which serving shares). A label or an answer is judged at most that much later.
FETCH_MIN_BYTES, FETCH_MAX_WAIT_MS = 64 * 1024, 100
IN_VAIN = frozenset({"rolled_back", "inconclusive", "aborted"})  # a rollout's ends that keep the champion


def register_subscribers(
    broker: KafkaBroker,
    watch: Watch,
    once: ExactlyOnce | None = None,
    *,
    contracts: dict[str, DataContract],
    registered: Registered,
    moves: ChampionMoves,
    join: LabelJoin | None = None,
    listener: Remembering | None = None,
) -> None:
    once = once or ExactlyOnce()
    join = join if join is not None else LabelJoin()

    async def publish(event: Event) -> None:
        await publish_event(broker, event)

    async def on_prediction(prediction: PredictionMade) -> list[Event]:
        """Drift and alerts the prediction reveals (ids derived from it), and the join of a label that waited."""
        found = with_derived_ids(prediction, await watch.on_prediction(prediction))
        return [*found, *join.remember(prediction)]

    @broker.subscriber(
        *JOINED,
        **batch_subscription(
            LABELS, "monitoring", fetch_min_bytes=FETCH_MIN_BYTES, fetch_max_wait_ms=FETCH_MAX_WAIT_MS
        ),
        listener=listener,
        title="predictions-labels",
    )
    async def on_predictions_or_labels(bodies: list[bytes], message: KafkaMessage) -> None:
        """Predictions: add each to its model's window, and remember it for its label. Labels: join each to the
        answers given for it (``predictions.labelled``). What a batch causes is published, with one wait for all
        the acks, before its commit; each message's effect is applied once even when the batch is retried.

        Both topics are keyed by entity and read by this one consumer with the range assignor, so a label
        and its answers reach the same replica. An invalid one is dead-lettered with the reason.
        """
        if listener is not None:  # labels that waited for an answer the rebuild found
            await listener.pay()
        raws = message.raw_message if isinstance(message.raw_message, tuple | list) else (message.raw_message,)
        handled: dict[str, tuple[Event, list[Event]]] = {}
        for raw, body in zip(raws, bodies, strict=True):
            done = await handle_each(broker, raw, lambda raw=raw, body=body: take(raw, body), service="monitoring")
            if done is not None and done[1] is not None:
                handled.setdefault(str(done[0].event_id), done)  # a redelivery in the same batch: once
        await once.publish_caused(broker, handled.values())  # what fails is tried again with the batch
        if listener is not None:
            for raw in raws:
                listener.remembered(raw.topic, raw.partition, raw.offset)
        observe_join(join)

    async def take(raw: Any, body: bytes) -> tuple[Event, list[Event] | None]:
        """What one prediction or label causes, applied once (None: done before); raises why it is refused."""
        event = _joined(raw, body, contracts)
        if isinstance(event, PredictionMade):
            return event, await once.apply(event, lambda: on_prediction(event), derive_ids=False)
        return event, await once.apply(event, lambda: join.join(event), derive_ids=False)  # its id derives from it

    @broker.subscriber(PREDICTIONS_LABELLED.name, **subscription(PREDICTIONS_LABELLED, "monitoring"))
    @exactly_once(broker, once)
    async def on_prediction_labelled(labelled: PredictionLabelled) -> list[Event]:
        """Judge the champion's answer by its late label; publish concept drift and accuracy alerts."""
        if (why := refusal(labelled, contracts)) is not None:
            raise InvalidMessage(why)
        return await watch.on_labelled(labelled)

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

    # from the end, on every replica: the one judging the model's error stream hears it (a restart forgets the
    # retrain requests it had asked too)
    @broker.subscriber(MODELS_REJECTED.name, **subscription(MODELS_REJECTED, "monitoring", auto_offset_reset="latest"))
    async def on_model_rejected(rejection: ModelRejected) -> None:
        """A rejected candidate: a retrain asked for its model was in vain."""
        if rejection.version is not None and not await registered(rejection.model_name, rejection.version):
            raise InvalidMessage(f"version {rejection.version!r} of {rejection.model_name!r} is not in the registry")
        watch.on_candidate_ended(rejection.model_name, rejection.version, f"rejected: {rejection.failed_gates}")

    @broker.subscriber(MODELS_ROLLOUT.name, **subscription(MODELS_ROLLOUT, "monitoring", auto_offset_reset="latest"))
    async def on_rollout(step: RolloutStepped) -> None:
        """A rollout that ended without promoting its candidate: a retrain asked for its model was in vain (not when
        a newer candidate superseded it: the retrain goes on in that one, and asking again then made each new
        candidate abort the canary before it, for ever, on a cluster whose two monitors both asked)."""
        if step.action not in IN_VAIN or step.superseded_by is not None:
            return
        # an aborted candidate may never have loaded, nor be registered; a rolled-back one was served
        if step.action != "aborted" and not await registered(step.model_name, step.candidate_version):
            raise InvalidMessage(f"version {step.candidate_version!r} of {step.model_name!r} is not in the registry")
        watch.on_candidate_ended(step.model_name, step.candidate_version, f"rollout {step.action}")


def _joined(raw: Any, body: bytes, contracts: dict[str, DataContract]) -> PredictionMade | LabelObserved:
    """The prediction or label a consumed message holds; raises why when it is neither, or is refused."""
    topic = JOINED.get(getattr(raw, "topic", ""))
    if topic is None:
        raise InvalidMessage(f"monitoring reads no messages of {raw!r}")
    event = topic.parse(body)
    if (why := refusal(event, contracts)) is not None:
        raise InvalidMessage(why)
    return event
