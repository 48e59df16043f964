"""The online challengers this replica keeps: one per model whose champion's spec enables one, fed by the subscribers.

Each model's labelled answers (``predictions.labelled``, keyed by model) reach one replica through
training's group (``subscribers.register_challenger``), so one replica learns a model, in order.
Drifts, runs, verdicts and rollout steps reach every replica (``follow``); a replica that does not
learn the model has no rows to learn or propose from. A proposal is logged to MLflow in a
thread (``snapshots.log_snapshot``) while learning goes on, then published as a ``ModelTrained`` caused by
the drift. (Not returned by the subscriber: logging takes seconds on a busy machine, and a learner that
waited for it would fall behind the stream it learns.)

A restart forgets the learner: the episode of a drift seen before it is not resumed (its batch
retrain still comes), and the next drift starts from the labels read since.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import structlog
from aiokafka import AIOKafkaConsumer
from mlflow.exceptions import MlflowException
from pydantic import ValidationError

from flywheel.common.featuresets import FeatureSet, load_feature_set
from flywheel.common.kafka import client_security
from flywheel.common.modelspec import ModelSpec, load_model_spec
from flywheel.common.tracking import Tags
from flywheel.schemas import (
    MODELS_APPROVED,
    MODELS_REJECTED,
    MODELS_ROLLOUT,
    MONITORING_DRIFT,
    TRAINING_COMPLETED,
    DriftDetected,
    Event,
    ModelApproved,
    ModelRejected,
    ModelTrained,
    PredictionLabelled,
    RolloutStepped,
    Topic,
)
from flywheel.schemas.catalogue import TOPICS
from flywheel.training.challenger import OnlineChallenger, Proposal, Row
from flywheel.training.runner import RunContext
from flywheel.training.snapshots import log_snapshot

log = structlog.get_logger(__name__)

FOLLOWED: dict[Topic, str] = {
    MONITORING_DRIFT: "A concept drift opens the model's online challenger episode (on every replica).",
    TRAINING_COMPLETED: "The drift's batch retrain ends the online challenger's episode (on every replica).",
    MODELS_APPROVED: "The verdict on an online snapshot: its rollout is awaited before the next (every replica).",
    MODELS_REJECTED: "The verdict on an online snapshot: the next may be proposed (on every replica).",
    MODELS_ROLLOUT: "The end of an online snapshot's rollout: the next may be proposed (on every replica).",
}
RETRY_S = 60.0  # how long a model found without a challenger is not asked about again


def row_of(labelled: PredictionLabelled) -> Row:
    served = labelled.served()
    at = labelled.observed_at or labelled.occurred_at
    return Row(
        dict(labelled.inputs),
        labelled.label,
        served.prediction,
        str(labelled.label_event_id),
        at.isoformat(),
        served.model_version,
    )


def challenged_spec(ctx: RunContext, model_name: str) -> ModelSpec | None:
    """The spec of the model's champion, named for the model, when it keeps an online challenger; else None.

    The champion's run names its spec (``Tags.MODEL_SPEC``), which serving read too: it logs the inputs
    of its answers only for a champion whose run says it ``learns_online``.
    """
    try:
        version = ctx.mlflow.get_model_version_by_alias(model_name, "champion")
        tags = ctx.mlflow.get_run(version.run_id).data.tags
    except MlflowException:
        return None
    named, dataset = tags.get(Tags.MODEL_SPEC), tags.get(Tags.DATASET)
    if tags.get(Tags.LEARNS_ONLINE) != "true" or not named or not dataset:
        return None
    try:
        spec = load_model_spec(ctx.datasets_dir, dataset, named)
    except (FileNotFoundError, ValueError) as exc:
        log.warning("online challenger spec unreadable", model=model_name, spec=named, error=str(exc))
        return None
    return spec.model_copy(update={"model_name": model_name}) if spec.online_challenger else None


class Challengers:
    """The challengers of the models whose champion keeps one, created on their first labelled answer."""

    def __init__(
        self,
        ctx: RunContext,
        publish: Callable[[Event], Awaitable[None]],
        features: Callable[[str], FeatureSet] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ctx, self.publish, self.clock = ctx, publish, clock
        self._logging: set[asyncio.Task] = set()
        self._features = features or (lambda dataset: load_feature_set(ctx.datasets_dir, dataset))
        self.kept: dict[str, OnlineChallenger] = {}
        self._none: dict[str, float] = {}  # model -> when to ask again whether it keeps a challenger

    async def of(self, model_name: str) -> OnlineChallenger | None:
        if model_name in self.kept:
            return self.kept[model_name]
        if self.clock() < self._none.get(model_name, float("-inf")):
            return None
        spec = await asyncio.to_thread(challenged_spec, self.ctx, model_name)
        if spec is None:
            self._none[model_name] = self.clock() + RETRY_S
            return None
        self.kept[model_name] = OnlineChallenger(spec, self._features(spec.dataset))
        log.info("online challenger kept", model=model_name, spec=spec.spec_name)
        return self.kept[model_name]

    async def learn(self, labelled: PredictionLabelled) -> None:
        """Learn one labelled answer; a snapshot it earned is logged and published in the background."""
        if not labelled.inputs:  # logged without its inputs: the model keeps no online challenger
            return
        challenger = await self.of(labelled.model_name)
        if challenger is None:
            return
        try:
            proposal = challenger.learn(row_of(labelled), self.clock())
        except Exception as exc:  # the learner's failure, not the message's: no dead letter, learning goes on
            log.error("online challenger could not learn", model=labelled.model_name, error=repr(exc))
            return
        if proposal is not None:
            task = asyncio.create_task(self.log(challenger, proposal))
            self._logging.add(task)
            task.add_done_callback(self._logging.discard)

    async def log(self, challenger: OnlineChallenger, proposal: Proposal) -> ModelTrained | None:
        """Log the snapshot to MLflow (in a thread: seconds on a busy machine, while learning goes on) and publish
        its ``ModelTrained``; a failure is logged, and the next snapshot may come."""
        started = time.perf_counter()
        model = challenger.spec.model_name
        log.info(
            "online challenger proposes a snapshot",
            model=model,
            drift=proposal.drift_id,
            snapshot=proposal.number,
            learned=proposal.learned_rows,
            judged_on=proposal.metric,
            **{name: round(value, 4) for name, value in proposal.scores.items()},
        )
        try:
            trained = await asyncio.to_thread(log_snapshot, self.ctx, challenger.spec, challenger.features, proposal)
            if not challenger.awaits(proposal):  # its episode ended while it was logged: the batch retrain took over
                log.info("online snapshot not proposed: its episode ended", model=model, run_id=trained.run_id)
                return None
            challenger.logged(proposal, trained.run_id)
            await self.publish(trained)
        except Exception as exc:
            challenger.logged(proposal, None)
            log.error("online snapshot not logged", model=model, snapshot=proposal.number, error=repr(exc))
            return None
        log.info(
            "online snapshot logged",
            model=model,
            run_id=trained.run_id,
            seconds=round(time.perf_counter() - started, 2),
        )
        return trained

    def on_event(self, event: Event) -> None:
        """A drift, run, verdict or rollout step of any model (``follow`` reads them on every replica)."""
        if isinstance(event, DriftDetected):
            self.on_drift(event)
        elif isinstance(event, ModelTrained):
            self.on_trained(event)
        elif isinstance(event, ModelApproved | ModelRejected):
            self.on_verdict(event.model_name, event.run_id, event.version, isinstance(event, ModelApproved))
        elif isinstance(event, RolloutStepped):
            self.on_rollout(event)

    def on_drift(self, drift: DriftDetected) -> None:
        """A concept drift opens the model's episode (a data drift alone says nothing of the labels)."""
        challenger = self.kept.get(drift.model_name)  # none yet: no labelled answer to learn from was read here
        if challenger is None or drift.kind != "concept":
            return
        opened = challenger.episode is None
        challenger.on_drift(str(drift.event_id), self.clock(), drift)
        if opened and challenger.episode is not None:
            log.info(
                "online challenger learning after a drift",
                model=drift.model_name,
                drift=str(drift.event_id),
                backfill=len(challenger.episode.learned),
            )

    def on_trained(self, trained: ModelTrained) -> None:
        """A batch run of the model ended the episode it answers."""
        challenger = self.kept.get(trained.model_name)
        if challenger is not None and trained.lineage.learning == "batch" and trained.rebuild_of is None:
            answers = {*trained.lineage.causation_chain, *trained.request_ids}
            self._ending(challenger, lambda: challenger.batch_arrived(answers))

    def on_verdict(self, model_name: str, run_id: str, version: str | None, approved: bool) -> None:
        challenger = self.kept.get(model_name)
        if challenger is not None:
            self._ending(challenger, lambda: challenger.verdict(run_id, version, approved))

    def on_rollout(self, stepped: RolloutStepped) -> None:
        challenger = self.kept.get(stepped.model_name)
        if challenger is not None and stepped.action not in ("started", "stepped"):
            promoted = stepped.action == "promoted"
            self._ending(challenger, lambda: challenger.rollout_ended(stepped.candidate_version, promoted))

    @staticmethod
    def _ending(challenger: OnlineChallenger, change: Callable[[], None]) -> None:
        episode = challenger.episode
        change()
        if episode is not None and challenger.episode is None:
            log.info(
                "online challenger episode ended",
                model=challenger.spec.model_name,
                drift=episode.drift_id,
                why=challenger.ended.get(episode.drift_id),
                learned=len(episode.learned),
                snapshots=episode.proposals,
            )


async def follow(bootstrap_servers: str, challengers: Challengers, backoff_s: float = 2.0) -> None:
    """Every replica reads the drifts and outcomes (``FOLLOWED``) from the moment it starts, with a plain
    consumer and no group: the replica that learns a model hears them, whichever replica's group was given
    their partitions. A message that is no event is skipped (the topic's consumers dead-letter it)."""
    while True:
        consumer = AIOKafkaConsumer(
            *(topic.name for topic in FOLLOWED),
            **client_security(),
            bootstrap_servers=bootstrap_servers,
            auto_offset_reset="latest",
            enable_auto_commit=False,
        )
        try:
            await consumer.start()
            async for message in consumer:
                try:
                    event = TOPICS[message.topic].parse(message.value)
                except ValidationError:
                    continue
                try:
                    challengers.on_event(event)
                except Exception as exc:  # one event the challengers cannot take: the others still count
                    log.error("online challenger event not taken", topic=message.topic, error=repr(exc))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # Kafka away for a moment: read on from the end when it is back
            log.warning("online challenger lost its drifts and outcomes; reading on", error=repr(exc))
            await asyncio.sleep(backoff_s)
        finally:
            await consumer.stop()
