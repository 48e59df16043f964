"""The serving engine: champions, the rollout in progress and the guard after a promotion.

Requests read ``champions`` and ``rollouts`` once and keep their references, so a model
switch never touches a request in flight; switching is one dict assignment. The pure
decisions live in ``rollout.py`` and ``guard.py``, the rollout state and its rebuild in
``rollouts.py``, how answers fare by their labels in ``answers.py`` and the prediction log in ``predictlog.py``.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from typing import Any

import structlog

from flywheel.common.modelspec import RolloutSpec
from flywheel.schemas import ChampionChanged, ModelApproved, PredictionLabelled, PredictionMade, RolloutStepped, utc_now
from flywheel.serving.answers import Answer, UnusableLabel, outcomes, prediction_id
from flywheel.serving.driver import Loader, Promote, Publish, RolloutDriver
from flywheel.serving.elsewhere import Followed, RolloutsElsewhere
from flywheel.serving.guard import Guard, Rollback
from flywheel.serving.metrics import PREDICT_LATENCY, PREDICTIONS_SERVED
from flywheel.serving.models import ServedModel
from flywheel.serving.ownership import Owns
from flywheel.serving.rollout import VariantFigures, route
from flywheel.serving.rollouts import ENDED, Rollout, RolloutLog
from flywheel.serving.settings import ServingSettings

log = structlog.get_logger(__name__)
PRODUCER = "serving"


async def _no_rollback(name: str, reason: str) -> None:
    raise RuntimeError("this engine cannot roll back a champion")


class Engine:
    """Scores requests with the right variant and drives rollouts to promotion or rollback."""

    def __init__(
        self,
        settings: ServingSettings,
        publish: Publish,
        promote: Promote,
        load: Loader,
        rollback: Rollback = _no_rollback,
        specs: dict[str, RolloutSpec] | None = None,
    ) -> None:
        self.settings = settings
        self.policy = settings.policy()
        self.champions: dict[str, ServedModel] = {}
        self.live: dict[str, VariantFigures] = {}  # each champion's figures since it started serving here
        self.guard = Guard(settings, self.policy, self.champions, self.live, rollback)
        self.driver = RolloutDriver(settings, self.policy, self.champions, self.guard, publish, promote, load, specs)
        self.rollouts = self.driver.active
        self.history = self.driver.history
        self._rng = random.Random()
        self._load = load
        self._misses: dict[str, float] = {}
        # the rollouts other replicas run, followed here
        self.elsewhere = RolloutsElsewhere(lambda name, version: self._load(name, version), self.policy.max_s + 60)

    # -- scoring ----------------------------------------------------------------------

    def score(
        self,
        name: str,
        records: list[dict[str, Any]],
        request_ids: list[str] | None = None,
        keys: list[str] | None = None,
        champion: ServedModel | None = None,
        count_failure: bool = True,
    ) -> tuple[list[Answer], list[PredictionMade]]:
        """Answer records with the champion or, by the rollout's routing, the candidate.

        Returns the answers and their entries for the prediction log (shadow answers too);
        the caller logs every one of them. Prediction ids derive from ``keys`` (by default
        the request ids), so scoring the same request again gives the same ids. ``champion``:
        the version that checked the records (by default, the one serving now). A champion that
        fails counts its errors unless ``count_failure`` is False (a batch that is scored again
        request by request, each counted then).
        """
        keys = keys or request_ids
        champion = champion or self.champions[name]
        rollout = self.rollouts.get(name)  # run here: its answers are counted, and it decides
        # a rollout run by another replica routes this replica's answers alike; its judge counts them by their labels
        routing: Rollout | Followed | None = rollout or self.elsewhere.routing(name, champion.version)
        started = time.perf_counter()
        rows = champion.rows(records)
        # each model is fed its own pinned feature-set version: the candidate's rows only when it differs
        candidate = routing.candidate if routing is not None else None
        candidate_rows = (
            rows
            if candidate is None or candidate.features.version == champion.features.version
            else candidate.rows(records)
        )
        entity_key = champion.features.entity_key
        variants = ["champion"] * len(records)
        if routing is not None:
            variants = [route(routing.strategy, routing.traffic, _entity(r, entity_key), self._rng) for r in records]
        by_variant: dict[str, list[int]] = {}
        for i, variant in enumerate(variants):
            by_variant.setdefault(variant, []).append(i)
        shadow: dict[int, tuple[Any, float | None]] = {}
        if routing is not None and routing.strategy == "shadow":
            shadow = self._shadow(routing.candidate, rollout, candidate_rows)
        answers: list[Answer | None] = [None] * len(records)
        for variant, indexes in by_variant.items():
            model = candidate if (variant == "candidate" and candidate) else champion
            try:
                predictions, probabilities = model.score(
                    [(rows if model is champion else candidate_rows)[i] for i in indexes]
                )
            except Exception as exc:  # a failing candidate never fails the request: the champion answers
                if model is champion:
                    if count_failure:
                        self._live(name).errors += len(indexes)
                    raise
                _count(rollout, "candidate", len(indexes), errors=len(indexes))
                log.warning("candidate failed, champion answers", error=repr(exc))
                model, variant = champion, "champion"
                predictions, probabilities = champion.score([rows[i] for i in indexes])
            for j, i in enumerate(indexes):
                request_id = request_ids[i] if request_ids else None
                answers[i] = Answer(
                    prediction_id(keys[i] if keys else None, "served"),
                    request_id,
                    predictions[j],
                    probabilities[j],
                    name,
                    model.version,
                    variant,
                )
        elapsed_ms = (time.perf_counter() - started) * 1000
        done = [a for a in answers if a is not None]
        for variant, served in Counter(a.variant for a in done).items():
            PREDICTIONS_SERVED.labels(name, variant).inc(served)
        if shadow:
            PREDICTIONS_SERVED.labels(name, "shadow").inc(len(shadow))
        logged: list[PredictionMade] = []
        live = self._live(name)
        for index, answer in enumerate(done):
            if answer.variant == "champion":
                live.requests += 1
                live.record_latency(elapsed_ms, self.policy.slow_ms)
            if rollout is not None:
                _count(rollout, answer.variant, 1, latency_ms=elapsed_ms)
            fed = (candidate, candidate_rows) if candidate and answer.variant == "candidate" else (champion, rows)
            logged.append(self._entry(fed[0], records[index], fed[1][index], answer, elapsed_ms))
        shadows: list[PredictionMade] = []
        for index, (prediction, probability) in shadow.items():
            request_id = request_ids[index] if request_ids else None
            shadow_answer = Answer(
                prediction_id(keys[index] if keys else None, "shadow"),
                request_id,
                prediction,
                probability,
                name,
                candidate.version,
                "shadow",
            )
            shadows.append(
                self._entry(candidate, records[index], candidate_rows[index], shadow_answer, elapsed_ms, False)
            )
        # a request's shadow answer is logged before its served one: a label the join read before both is joined
        # when the served answer arrives, and finds the shadow there already
        logged = [*shadows, *logged]
        PREDICT_LATENCY.labels(name).observe(elapsed_ms / 1000)
        if rollout is not None:
            self.driver.consider(rollout)
        return done, logged

    def _live(self, name: str) -> VariantFigures:
        if name not in self.live:
            self.live[name] = VariantFigures(task=self.champions[name].task)
        return self.live[name]

    def _shadow(
        self, candidate: ServedModel, rollout: Rollout | None, rows: list[list[float]]
    ) -> dict[int, tuple[Any, float | None]]:
        started = time.perf_counter()
        try:
            predictions, probabilities = candidate.score(rows)
        except Exception as exc:
            _count(rollout, "candidate", len(rows), errors=len(rows))
            log.warning("shadow candidate failed", error=repr(exc))
            return {}
        _count(rollout, "candidate", len(rows), latency_ms=(time.perf_counter() - started) * 1000)
        return {i: (predictions[i], probabilities[i]) for i in range(len(rows))}

    def _entry(
        self,
        model: ServedModel,
        record: dict[str, Any],
        row: list[float],
        answer: Answer,
        latency_ms: float,
        served: bool = True,
    ) -> PredictionMade:
        """The log entry of one answer, with the features ``model`` (the one that answered) was fed."""
        return PredictionMade(
            producer=PRODUCER,
            dataset=model.dataset,
            prediction_id=answer.prediction_id,
            request_id=answer.request_id,
            entity_id=_entity(record, model.features.entity_key),
            model_name=answer.model_name,
            model_version=answer.model_version,
            variant=answer.variant,
            served=served,
            prediction=answer.prediction,
            probability=answer.probability,
            features=dict(zip(model.features.names, (None if v != v else v for v in row), strict=True)),
            feature_set_version=model.features.version,
            latency_ms=latency_ms,
            inputs=model.inputs(record) if served else {},
        )

    # -- labels -----------------------------------------------------------------------

    def on_labelled(self, labelled: PredictionLabelled) -> None:
        """Credit each variant's answer to a labelled request (right or wrong, or its absolute error), whichever
        replica gave it; rollouts and the guard judge on it. A regression model's label that is not a number
        is ignored, as is a model not served here."""
        name = labelled.model_name
        fared = self._fared(labelled)
        if fared is None:
            return
        champion = self.champions.get(name)
        if "champion" in fared and champion is not None and fared["champion"][1] == champion.version:
            # the figures of the version serving now: a promotion started them anew
            self._live(name).credit(fared["champion"][0])
        rollout = self.rollouts.get(name)
        if rollout is None:
            self.guard.check(name)
            return
        self._credit(rollout, fared, str(labelled.label_event_id))

    def credit_missed(self, labelled: PredictionLabelled) -> bool:
        """A label a resumed rollout's judge missed (joined before this replica resumed it); the rollout
        credits each label once, whether read here, by the subscriber, or both. Whether it was credited."""
        rollout = self.rollouts.get(labelled.model_name)
        if rollout is None or (fared := self._fared(labelled)) is None:
            return False
        return self._credit(rollout, fared, str(labelled.label_event_id))

    def _fared(self, labelled: PredictionLabelled) -> dict[str, tuple[Any, str]] | None:
        if labelled.model_name not in self.champions:
            return None
        try:
            return outcomes(labelled, self.champions[labelled.model_name].task)
        except UnusableLabel as exc:  # the labeller's mistake: no figure changes, nothing crashes
            log.warning("label ignored", request_id=labelled.request_id, dataset=labelled.dataset, reason=str(exc))
            return None

    def _credit(self, rollout: Rollout, fared: dict[str, tuple[Any, str]], label_id: str) -> bool:
        if label_id in rollout.credited:
            return False
        rollout.credited.add(label_id)
        versions = {"champion": rollout.champion_version, "candidate": rollout.candidate.version}
        for variant, (result, version) in fared.items():
            figures = rollout.figures.get(variant)
            if figures is None or version != versions.get(variant):
                continue
            figures.credit(result)
            if variant == "candidate":
                rollout.step_figures.credit(result)
        self.driver.consider(rollout)
        return True

    # -- rollouts ---------------------------------------------------------------------

    async def start_rollout(self, approved: ModelApproved, strategy: str | None = None) -> RolloutStepped | None:
        """Load the approved candidate and roll it out; a candidate that fails to load aborts the rollout.

        A model served on demand gets its champion loaded first: the replica that reads the approval
        may not have answered for that model yet.
        """
        await self.find_champion(approved.model_name)
        return await self.driver.start_rollout(approved, strategy)

    def rearm(self, folded: RolloutLog) -> None:
        """After a restart: remember the decided rollouts, and guard the promotions still in their bake period."""
        self.driver.rearm(folded)

    async def resume(self, folded: RolloutLog, owns: Owns = lambda name: True) -> list[RolloutStepped]:
        """Continue the rollouts the log says are running of the models this replica ``owns`` (``ownership.py``)
        and does not run yet; those it runs and no longer owns it follows from now on."""
        self.driver.decided |= folded.decided
        for name in [name for name in self.rollouts if not owns(name)]:
            self.elsewhere.adopt(self.rollouts.pop(name))
        taken = [last for last in folded.running() if owns(last.model_name) and last.model_name not in self.rollouts]
        warm = {}  # the candidates followed here until now: resumed without a load from MLflow
        for last in taken:  # a model served on demand is loaded before its rollout resumes
            if (held := self.elsewhere.take(last.model_name, last.candidate_version)) is not None:
                warm[last.model_name] = held
            await self.find_champion(last.model_name)
        return await self.driver.resume(taken, warm)

    # -- champions and the guard after promotion ------------------------------------------------

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

    async def prefetch(self, step: RolloutStepped) -> None:
        """Follow a rollout another replica runs (``elsewhere.py``): its candidate held warm, and its share of
        this replica's traffic. The replica running it hears its own steps and ignores them; the end of its
        rollout published by another replica (the owner before a handover, deciding before it handed over)
        ends it here too."""
        running = self.rollouts.get(step.model_name)
        if running is None or running.candidate.version != step.candidate_version:
            await self.elsewhere.follow(step)
            return
        if step.action in ENDED and not self.driver.published(step):
            log.info("rollout decided by another replica", model=step.model_name, action=step.action)
            self.rollouts.pop(step.model_name, None)
            self.driver.remember(step)
            if step.action == "promoted":  # warm for the champion's move
                self.elsewhere.adopt(running)

    def prefetched_version(self, name: str) -> str | None:
        """The version of ``name`` this replica holds warm for a rollout run elsewhere, if any."""
        return self.elsewhere.version(name)

    def forget_miss(self, name: str) -> None:
        """The registry has a champion of ``name`` now, which this replica does not serve: the next
        request asks for it again at once, and a candidate fetched for its rollout is let go."""
        self._misses.pop(name, None)
        self.elsewhere.forget(name)

    async def use_champion(self, change: ChampionChanged) -> None:
        """Serve the registry's new champion (a promotion, a rollback, or the first model)."""
        name, version = change.model_name, change.version
        current = self.champions.get(name)
        if current is not None and current.version == version:
            return
        rollout = self.rollouts.get(name)
        started = time.monotonic()
        prefetched = self.elsewhere.take(name, version)
        if rollout is not None and rollout.candidate.version == version:  # loaded here already, and warm
            model = rollout.candidate
        elif prefetched is not None:  # loaded when its rollout started on another replica
            model = prefetched
        else:
            model = await self._load(name, version)
        if model is None:
            raise LookupError(f"champion {name} v{version} announced but not in the registry")
        if change.action == "promote":
            self.guard.serve(name, model)
        else:  # a rollback ends any bake period: the restored champion is not on trial
            self.champions[name] = model
            self.live.pop(name, None)
            self.guard.bakes.pop(name, None)
        if rollout is not None and rollout.candidate.version == version:
            self.rollouts.pop(name, None)
        log.info(
            "champion serving",
            model=name,
            version=version,
            action=change.action,
            reason=change.reason,
            load_s=round(time.monotonic() - started, 3),
            since_move_s=round((utc_now() - change.occurred_at).total_seconds(), 3),
        )


def _entity(record: dict[str, Any], key: str) -> str | None:
    value = record.get(key)
    return None if value is None else str(value)


def _count(rollout: Rollout | None, variant: str, n: int, errors: int = 0, latency_ms: float | None = None) -> None:
    if rollout is not None:
        rollout.count(variant, n, errors, latency_ms)
