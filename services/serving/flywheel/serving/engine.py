"""The serving engine: champions, the rollout in progress, the prediction log and label joins.

Requests read ``champions`` and ``rollouts`` once and keep their references, so a model
switch never touches a request in flight; switching is one dict assignment.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from flywheel.schemas import Event, LabelObserved, ModelApproved, PredictionMade, RolloutStepped
from flywheel.serving.metrics import LOG_DROPPED, PREDICT_LATENCY, PREDICTIONS_SERVED, ROLLOUT_TRAFFIC
from flywheel.serving.models import ServedModel
from flywheel.serving.rollout import Decision, Margins, VariantFigures, decide, route, worse
from flywheel.serving.settings import ServingSettings

log = structlog.get_logger(__name__)
PRODUCER = "serving"

Publish = Callable[[Event], Awaitable[None]]
Promote = Callable[[str, str, str], Awaitable[None]]
Loader = Callable[[str, str], Awaitable[ServedModel | None]]  # (name, version number or "champion")


@dataclass
class Rollout:
    """A candidate being rolled out against the champion."""

    model_name: str
    strategy: str
    candidate: ServedModel
    champion_version: str
    steps: list[float]
    cause: Event | None = None
    step: int = 0
    figures: dict[str, VariantFigures] = field(
        default_factory=lambda: {"champion": VariantFigures(), "candidate": VariantFigures()}
    )
    step_figures: VariantFigures = field(default_factory=VariantFigures)
    deciding: bool = False

    @property
    def traffic(self) -> float:
        if self.strategy == "shadow":
            return 0.0
        return self.steps[min(self.step, len(self.steps) - 1)]

    def describe(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "strategy": self.strategy,
            "candidate_version": self.candidate.version,
            "champion_version": self.champion_version,
            "step": self.step,
            "steps": self.steps,
            "candidate_traffic": self.traffic,
            "figures": {k: v.as_dict() for k, v in self.figures.items()},
        }


@dataclass
class Answer:
    prediction_id: str
    request_id: str | None
    prediction: Any
    probability: float | None
    model_name: str
    model_version: str
    variant: str


class Engine:
    """Scores requests with the right variant and drives rollouts to promotion or rollback."""

    def __init__(self, settings: ServingSettings, publish: Publish, promote: Promote, load: Loader) -> None:
        self.settings = settings
        self.margins = Margins(
            settings.min_requests,
            settings.min_labels,
            settings.accuracy_margin,
            settings.error_rate_margin,
            settings.latency_p99_ratio,
            settings.latency_floor_ms,
        )
        self._publish, self._promote, self._load = publish, promote, load
        self.champions: dict[str, ServedModel] = {}
        self.rollouts: dict[str, Rollout] = {}
        self.history: list[RolloutStepped] = []
        self.pending: OrderedDict[str, tuple[str, dict[str, Any]]] = OrderedDict()
        self.log_queue: asyncio.Queue[PredictionMade] = asyncio.Queue(settings.log_queue_size)
        self._rng = random.Random()
        self._tasks: set[asyncio.Task] = set()
        self._misses: dict[str, float] = {}

    # -- scoring ----------------------------------------------------------------------

    def score(
        self,
        name: str,
        records: list[dict[str, Any]],
        request_ids: list[str] | None = None,
        sink: list[PredictionMade] | None = None,
    ) -> list[Answer]:
        """Answer records with the champion or, by the rollout's routing, the candidate.

        Every answer is logged to ``predictions``: in the background (sampled) for HTTP, or
        into ``sink`` (all of them) when the caller publishes them itself, as Kafka requests do.
        """
        champion = self.champions[name]
        rollout = self.rollouts.get(name)
        started = time.perf_counter()
        rows = champion.features.matrix(records)
        entity_key = champion.features.entity_key
        variants = ["champion"] * len(records)
        if rollout is not None:
            variants = [route(rollout.strategy, rollout.traffic, _entity(r, entity_key), self._rng) for r in records]
        answers: list[Answer | None] = [None] * len(records)
        by_variant: dict[str, list[int]] = {}
        for i, variant in enumerate(variants):
            by_variant.setdefault(variant, []).append(i)
        shadow: dict[int, tuple[Any, float | None]] = {}
        if rollout is not None and rollout.strategy == "shadow":
            shadow = self._shadow(rollout, rows)
        for variant, indexes in by_variant.items():
            model = rollout.candidate if (variant == "candidate" and rollout) else champion
            try:
                predictions, probabilities = model.score([rows[i] for i in indexes])
            except Exception as exc:  # a failing candidate never fails the request: the champion answers
                if model is champion:
                    raise
                self._count(rollout, "candidate", len(indexes), errors=len(indexes))
                log.warning("candidate failed, champion answers", error=repr(exc))
                model, variant = champion, "champion"
                predictions, probabilities = champion.score([rows[i] for i in indexes])
            for j, i in enumerate(indexes):
                request_id = request_ids[i] if request_ids else None
                answers[i] = Answer(
                    uuid.uuid4().hex, request_id, predictions[j], probabilities[j], name, model.version, variant
                )
        elapsed_ms = (time.perf_counter() - started) * 1000
        done = [a for a in answers if a is not None]
        for variant, served in Counter(a.variant for a in done).items():
            PREDICTIONS_SERVED.labels(name, variant).inc(served)
        if shadow:
            PREDICTIONS_SERVED.labels(name, "shadow").inc(len(shadow))
        for index, answer in enumerate(done):
            self._remember(answer, shadow.get(index))
            if rollout is not None:
                self._count(rollout, answer.variant, 1, latency_ms=elapsed_ms)
            self._log(champion, records[index], rows[index], answer, elapsed_ms, sink)
        for index, (prediction, probability) in shadow.items():
            request_id = request_ids[index] if request_ids else None
            shadow_answer = Answer(
                uuid.uuid4().hex, request_id, prediction, probability, name, rollout.candidate.version, "shadow"
            )
            self._log(champion, records[index], rows[index], shadow_answer, elapsed_ms, sink, served=False)
        PREDICT_LATENCY.labels(name).observe(elapsed_ms / 1000)
        if rollout is not None:
            self._consider(rollout)
        return done

    def _shadow(self, rollout: Rollout, rows: list[list[float]]) -> dict[int, tuple[Any, float | None]]:
        started = time.perf_counter()
        try:
            predictions, probabilities = rollout.candidate.score(rows)
        except Exception as exc:
            self._count(rollout, "candidate", len(rows), errors=len(rows))
            log.warning("shadow candidate failed", error=repr(exc))
            return {}
        self._count(rollout, "candidate", len(rows), latency_ms=(time.perf_counter() - started) * 1000)
        return {i: (predictions[i], probabilities[i]) for i in range(len(rows))}

    def _count(
        self, rollout: Rollout | None, variant: str, n: int, errors: int = 0, latency_ms: float | None = None
    ) -> None:
        if rollout is None:
            return
        figures = rollout.figures[variant]
        figures.requests += n
        figures.errors += errors
        if latency_ms is not None:
            figures.latencies_ms.append(latency_ms)
        if variant == "candidate":
            rollout.step_figures.requests += n
            rollout.step_figures.errors += errors

    def _remember(self, answer: Answer, shadow: tuple[Any, float | None] | None) -> None:
        variants = {answer.variant: answer.prediction}
        if shadow is not None:
            variants["candidate"] = shadow[0]
        self.pending[answer.prediction_id] = (answer.model_name, variants)
        if len(self.pending) > 200_000:
            self.pending.popitem(last=False)

    def _log(
        self,
        champion: ServedModel,
        record: dict[str, Any],
        row: list[float],
        answer: Answer,
        latency_ms: float,
        sink: list[PredictionMade] | None,
        served: bool = True,
    ) -> None:
        if sink is None and self.settings.log_sample_rate < 1 and self._rng.random() >= self.settings.log_sample_rate:
            return
        event = PredictionMade(
            producer=PRODUCER,
            dataset=champion.dataset,
            prediction_id=answer.prediction_id,
            request_id=answer.request_id,
            entity_id=_entity(record, champion.features.entity_key),
            model_name=answer.model_name,
            model_version=answer.model_version,
            variant=answer.variant,
            served=served,
            prediction=answer.prediction,
            probability=answer.probability,
            features=dict(zip(champion.features.names, (None if v != v else v for v in row), strict=True)),
            latency_ms=latency_ms,
        )
        if sink is not None:
            sink.append(event)
            return
        try:
            self.log_queue.put_nowait(event)
        except asyncio.QueueFull:
            LOG_DROPPED.inc()

    # -- labels -----------------------------------------------------------------------

    def on_label(self, label: LabelObserved) -> None:
        """Credit each variant's answer to a labelled prediction; rollouts judge on it."""
        if label.prediction_id is None or label.prediction_id not in self.pending:
            return
        name, variants = self.pending.pop(label.prediction_id)
        rollout = self.rollouts.get(name)
        if rollout is None:
            return
        for variant, predicted in variants.items():
            figures = rollout.figures.get(variant)
            if figures is None:
                continue
            figures.labelled += 1
            figures.correct += str(predicted) == str(label.label)
            if variant == "candidate":
                rollout.step_figures.labelled += 1
                rollout.step_figures.correct += str(predicted) == str(label.label)
        self._consider(rollout)

    # -- rollouts ---------------------------------------------------------------------

    async def start_rollout(self, approved: ModelApproved, strategy: str | None = None) -> RolloutStepped | None:
        """Load the approved candidate and roll it out; a candidate that fails to load aborts the rollout."""
        name = approved.model_name
        champion = self.champions.get(name)
        if champion is None or champion.version == approved.version:
            return None
        strategy = strategy or self.settings.strategy
        previous = self.rollouts.pop(name, None)
        if previous is not None:
            await self._emit(previous, "aborted", f"superseded by version {approved.version}")
        try:
            candidate = await self._load(name, approved.version)
            if candidate is None:
                raise LookupError(f"version {approved.version} of {name} is not in the registry")
            candidate.score([[0.0] * len(candidate.features.names)])  # warm: a model that cannot score aborts here
        except Exception as exc:
            aborted = RolloutStepped(
                producer=PRODUCER,
                model_name=name,
                candidate_version=approved.version,
                champion_version=champion.version,
                strategy=strategy,
                action="aborted",
                reason=f"candidate failed to load: {exc}",
                **approved.caused(),
            )
            await self._publish(aborted)
            self.history.append(aborted)
            return aborted
        steps = (
            list(self.settings.canary_steps)
            if strategy == "canary"
            else ([self.settings.ab_split] if strategy == "ab" else [1.0])
        )
        rollout = Rollout(name, strategy, candidate, champion.version, steps, cause=approved)
        self.rollouts[name] = rollout
        started = await self._emit(rollout, "started", f"{strategy} rollout of version {candidate.version}")
        self._consider(rollout)
        return started

    def _consider(self, rollout: Rollout) -> None:
        if rollout.deciding or self.rollouts.get(rollout.model_name) is not rollout:
            return
        candidate, champion = rollout.figures["candidate"], rollout.figures["champion"]
        why = worse(candidate, champion, self.margins)  # over the whole rollout: roll back at once
        if why:
            decision = Decision("rollback", why)
        elif rollout.strategy == "canary":  # each step is judged on its own evidence
            decision = decide("canary", rollout.step, rollout.steps, rollout.step_figures, champion, self.margins)
        else:
            decision = decide(rollout.strategy, 0, rollout.steps, candidate, champion, self.margins)
        if decision.action == "hold":
            return
        rollout.deciding = True
        task = asyncio.get_running_loop().create_task(self._apply(rollout, decision))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _apply(self, rollout: Rollout, decision: Decision) -> None:
        name = rollout.model_name
        try:
            if decision.action == "step":
                rollout.step += 1
                rollout.step_figures = VariantFigures()
                ROLLOUT_TRAFFIC.labels(name).set(rollout.traffic)
                await self._emit(rollout, "stepped", decision.reason)
            elif decision.action == "rollback":
                self.rollouts.pop(name, None)
                ROLLOUT_TRAFFIC.labels(name).set(0)
                await self._emit(rollout, "rolled_back", decision.reason)
            elif decision.action == "promote":
                await self._promote(name, rollout.candidate.version, decision.reason)
                self.champions[name] = rollout.candidate
                self.rollouts.pop(name, None)
                ROLLOUT_TRAFFIC.labels(name).set(0)
                await self._emit(rollout, "promoted", decision.reason, traffic=1.0)
        except Exception as exc:
            log.error("rollout decision failed; rolling back", action=decision.action, error=repr(exc))
            self.rollouts.pop(name, None)
            await self._emit(rollout, "rolled_back", f"{decision.action} failed: {exc}")
        finally:
            rollout.deciding = False

    async def _emit(self, rollout: Rollout, action: str, reason: str, traffic: float | None = None) -> RolloutStepped:
        cause = rollout.cause
        event = RolloutStepped(
            producer=PRODUCER,
            model_name=rollout.model_name,
            candidate_version=rollout.candidate.version,
            champion_version=rollout.champion_version,
            strategy=rollout.strategy,
            action=action,
            step=rollout.step,
            candidate_traffic=rollout.traffic if traffic is None else traffic,
            reason=reason,
            figures={k: v.as_dict() for k, v in rollout.figures.items()},
            **(cause.caused() if cause else {}),
        )
        rollout.cause = event
        self.history.append(event)
        del self.history[:-200]
        log.info(
            "rollout",
            action=action,
            model=rollout.model_name,
            candidate=rollout.candidate.version,
            step=rollout.step,
            traffic=event.candidate_traffic,
            reason=reason,
        )
        await self._publish(event)
        return event

    # -- champions --------------------------------------------------------------------

    async def find_champion(self, name: str) -> bool:
        """Serve a model whose champion is in the registry but not loaded here (e.g. after a restart)."""
        if name in self.champions:
            return True
        missed = self._misses.get(name)
        if missed is not None and time.monotonic() - missed < 30:  # don't ask MLflow on every request
            return False
        try:
            model = await self._load(name, "champion")
        except Exception as exc:  # a broken artifact is this model's problem, not the request's server
            log.warning("champion failed to load", model=name, error=repr(exc))
            model = None
        if model is None:
            self._misses[name] = time.monotonic()
            return False
        self.champions.setdefault(name, model)
        return True

    async def use_champion(self, name: str, version: str) -> None:
        """Serve ``version`` as champion (a registry promote or rollback, or the first model)."""
        current = self.champions.get(name)
        if current is not None and current.version == version:
            return
        model = await self._load(name, version)
        if model is None:
            return
        self.champions[name] = model
        rollout = self.rollouts.get(name)
        if rollout is not None and rollout.candidate.version == version:
            self.rollouts.pop(name, None)
        log.info("champion serving", model=name, version=version)

    async def drain_log(self, publish: Publish) -> None:
        """Publish logged predictions in the background, many at a time."""
        while True:
            batch = [await self.log_queue.get()]
            while not self.log_queue.empty() and len(batch) < 500:
                batch.append(self.log_queue.get_nowait())
            results = await asyncio.gather(*(publish(e) for e in batch), return_exceptions=True)
            failed = sum(isinstance(r, Exception) for r in results)
            if failed:
                LOG_DROPPED.inc(failed)
                log.error("prediction log publish failed", failed=failed)


def _entity(record: dict[str, Any], key: str) -> str | None:
    value = record.get(key)
    return None if value is None else str(value)
