"""Driving rollouts: start, step, promote, roll back or end inconclusive on live figures; resume after a restart.

The decisions are ``rollout.py``'s (pure); this module applies them: it loads candidates,
publishes every step on ``models.rollout`` (the durable log a restarted serving resumes
from), and asks the registry to promote.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from uuid import UUID

import structlog

from flywheel.common.modelspec import RolloutSpec
from flywheel.schemas import Event, ModelApproved, RolloutStepped
from flywheel.serving.guard import Bake, Guard
from flywheel.serving.metrics import ROLLOUT_TRAFFIC
from flywheel.serving.models import ServedModel
from flywheel.serving.rollout import Decision, Policy, decide, incomparable, judge
from flywheel.serving.rollouts import ENDED, Rollout, RolloutLog, figures_from
from flywheel.serving.sequential import Comparison
from flywheel.serving.settings import ServingSettings

log = structlog.get_logger(__name__)
PRODUCER = "serving"

Publish = Callable[[Event], Awaitable[None]]
Promote = Callable[[str, str, str, UUID], Awaitable[None]]  # (name, version, reason, the promoted step's id)
Loader = Callable[[str, str], Awaitable[ServedModel | None]]  # (name, version number or "champion")


def resume_step(steps: list[float], step: int, traffic: float) -> int:
    """The step to resume at: the logged one, unless the steps changed meanwhile (a model's ``rollout:``
    edited), then the first whose traffic is not below what the candidate had, so it never jumps up.

    >>> resume_step([0.1, 0.25, 0.5, 1.0], 1, 0.25), resume_step([0.5, 1.0], 1, 0.25)
    (1, 0)
    """
    if step < len(steps) and steps[step] == traffic:
        return step
    return next((i for i, share in enumerate(steps) if share >= traffic), len(steps) - 1)


class RolloutDriver:
    """The rollouts of every model served here, from approval to promotion, rollback or abort."""

    def __init__(
        self,
        settings: ServingSettings,
        policy: Policy,
        champions: dict[str, ServedModel],
        guard: Guard,
        publish: Publish,
        promote: Promote,
        load: Loader,
        specs: dict[str, RolloutSpec] | None = None,
    ) -> None:
        self.settings, self.policy, self.champions, self.guard = settings, policy, champions, guard
        self.specs = specs or {}
        self._publish, self._promote, self._load = publish, promote, load
        self.active: dict[str, Rollout] = {}
        self.history: list[RolloutStepped] = []
        self.decided: set[tuple[str, str]] = set()
        self._tasks: set[asyncio.Task] = set()

    def rollout_spec(self, name: str, candidate: ServedModel | None = None) -> RolloutSpec:
        """How to roll the candidate out: the spec it was trained with says, else the model's ``model.yaml``."""
        if candidate is not None and candidate.rollout is not None:
            return candidate.rollout
        return self.specs.get(name, RolloutSpec())

    def strategy_of(self, name: str, candidate: ServedModel | None = None) -> str:
        """The model's own rollout strategy (the candidate's spec, or its ``model.yaml``), else serving's."""
        return self.rollout_spec(name, candidate).strategy or self.settings.strategy

    def steps_of(self, name: str, strategy: str, candidate: ServedModel | None = None) -> list[float]:
        """The candidate's traffic per step: the model's own (the candidate's spec, or ``model.yaml``), else
        serving's."""
        spec = self.rollout_spec(name, candidate)
        if strategy == "canary":
            return list(spec.canary_steps or self.settings.canary_steps)
        return [spec.ab_split or self.settings.ab_split] if strategy == "ab" else [1.0]

    async def start_rollout(self, approved: ModelApproved, strategy: str | None = None) -> RolloutStepped | None:
        """Load the approved candidate and roll it out; a candidate that fails to load aborts the rollout."""
        name = approved.model_name
        champion = self.champions.get(name)
        if champion is None or champion.version == approved.version:
            return None
        if approved.producer == "registry" and self._seen_before(name, approved.version):
            return None  # a redelivered approval: its rollout runs (or resumed) or has ended
        chosen = strategy
        strategy = chosen or self.strategy_of(name)
        previous = self.active.pop(name, None)
        if previous is not None:
            superseded = previous.event("aborted", f"superseded by version {approved.version}", self.policy.alpha)
            await self._publish_step(previous, superseded.model_copy(update={"superseded_by": approved.version}))
        try:
            candidate = await self._candidate(name, approved.version)
        except Exception as exc:
            reason = f"candidate failed to load: {exc}"
            return await self._abort_unloaded(approved, name, approved.version, champion.version, strategy, reason)
        if (why := incomparable(candidate.task, champion.task)) is not None:
            return await self._abort_unloaded(approved, name, approved.version, champion.version, strategy, why)
        strategy = chosen or self.strategy_of(name, candidate)
        why = f"{strategy} rollout of version {candidate.version}"
        if chosen is None and candidate.takes_over_from(champion):
            strategy = "blue_green"
            why = (
                f"blue-green: the batch retrain v{candidate.version}, gated not worse than online snapshot "
                f"v{champion.version}, takes over from it (the bake guard rolls it back if it does worse)"
            )
        steps = self.steps_of(name, strategy, candidate)
        rollout = Rollout(name, strategy, candidate, champion.version, steps, cause=approved)
        rollout.slow_ms = self.policy.slow_ms
        self.active[name] = rollout
        started = await self._emit(rollout, "started", why)
        self.consider(rollout)
        return started

    def _seen_before(self, name: str, version: str) -> bool:
        running = self.active.get(name)
        return (running is not None and running.candidate.version == version) or (name, version) in self.decided

    async def _candidate(self, name: str, version: str) -> ServedModel:
        candidate = await self._load(name, version)
        if candidate is None:
            raise LookupError(f"version {version} of {name} is not in the registry")
        candidate.score([[0.0] * len(candidate.features.names)])  # warm: a model that cannot score aborts here
        return candidate

    async def _abort_unloaded(
        self,
        cause: Event,
        name: str,
        candidate_version: str,
        champion_version: str | None,
        strategy: str,
        reason: str,
        step: int = 0,
    ) -> RolloutStepped:
        """End a rollout whose candidate never served, with the reason, caused by ``cause``."""
        aborted = RolloutStepped(
            producer=PRODUCER,
            model_name=name,
            candidate_version=candidate_version,
            champion_version=champion_version,
            strategy=strategy,
            action="aborted",
            step=step,
            reason=reason,
            **cause.caused(),
        )
        await self._publish(aborted)
        self.remember(aborted)
        return aborted

    async def resume(
        self, running: list[RolloutStepped], warm: dict[str, ServedModel] | None = None
    ) -> list[RolloutStepped]:
        """Continue each rollout whose last event is given (its log says it is running), or end it with the
        reason; the events it published."""
        return [await self._resume_one(last, (warm or {}).get(last.model_name)) for last in running]

    def rearm(self, folded: RolloutLog) -> None:
        """After a restart: remember the decided rollouts, and guard the promotions still in their bake period."""
        self.decided |= folded.decided
        now = time.time()
        for promoted in folded.promotions():
            until = promoted.occurred_at.timestamp() + self.settings.bake_s
            baseline = figures_from(promoted.figures.get("champion", {}))
            if until > now and promoted.champion_version:
                self.guard.bakes[promoted.model_name] = Bake(
                    promoted.model_name, promoted.candidate_version, promoted.champion_version, baseline, until
                )

    async def _resume_one(self, last: RolloutStepped, warm: ServedModel | None = None) -> RolloutStepped:
        name = last.model_name
        champion = self.champions.get(name)
        if champion is None or champion.version != last.champion_version:
            now_serving = champion.version if champion else "none"
            return await self._abort_unloaded(
                last,
                name,
                last.candidate_version,
                last.champion_version,
                last.strategy,
                f"serving restarted and the champion is now {now_serving}, not {last.champion_version}",
                step=last.step,
            )
        try:
            candidate = warm or await self._candidate(name, last.candidate_version)
        except Exception as exc:
            reason = f"serving restarted and the candidate failed to load: {exc}"
            return await self._abort_unloaded(
                last, name, last.candidate_version, last.champion_version, last.strategy, reason, last.step
            )
        if (why := incomparable(candidate.task, champion.task)) is not None:
            return await self._abort_unloaded(
                last, name, last.candidate_version, last.champion_version, last.strategy, why, last.step
            )
        steps = self.steps_of(name, last.strategy, candidate)
        step = resume_step(steps, last.step, last.candidate_traffic)
        rollout = Rollout(name, last.strategy, candidate, champion.version, steps, cause=last, step=step)
        rollout.slow_ms = self.policy.slow_ms
        # its clock runs on from its last event: a rollout handed from replica to replica still ends in time
        rollout.started_at -= (last.elapsed_s or 0.0) + max(0.0, time.time() - last.occurred_at.timestamp())
        rollout.carry_over(last.figures)
        self.active[name] = rollout
        ROLLOUT_TRAFFIC.labels(name).set(rollout.traffic)
        return await self._emit(
            rollout,
            "started",
            f"resumed by this replica (a restart, or the model's approvals handed to it) at step {last.step} "
            f"({rollout.traffic:.0%} of traffic), with the "
            "figures of its last event and the labels joined since (this step's answers are counted afresh)",
        )

    def consider(self, rollout: Rollout) -> None:
        """Decide on the rollout's latest figures; a step, promotion, rollback or end is applied in the background.

        The sequential test is over the whole rollout (every look is valid); a canary's step also
        needs ``min_requests`` candidate answers at its own traffic share, on any replica.
        """
        if rollout.deciding or self.active.get(rollout.model_name) is not rollout:
            return
        candidate, champion = rollout.figures["candidate"], rollout.figures["champion"]
        at_step = rollout.step_figures if rollout.strategy == "canary" else candidate
        # answers at the step: those given here, or those labelled from every replica (other replicas route
        # the candidate its share too, and only their labels reach this judge)
        step_requests = max(at_step.requests, at_step.labelled)
        verdict = judge(candidate, champion, self.policy)
        decision = decide(
            rollout.strategy, rollout.step, rollout.steps, verdict, step_requests, rollout.elapsed_s, self.policy
        )
        if decision.action == "hold":
            return
        rollout.deciding = True
        self._spawn(self._apply(rollout, decision))

    def expire(self) -> None:
        """Look at every running rollout, so that one without traffic still ends at its time limit."""
        for rollout in list(self.active.values()):
            self.consider(rollout)

    async def watch(self, every_s: float = 5.0) -> None:
        """Run ``expire`` every ``every_s`` seconds until cancelled."""
        while True:
            await asyncio.sleep(every_s)
            self.expire()

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _apply(self, rollout: Rollout, decision: Decision) -> None:
        name = rollout.model_name
        try:
            if decision.action == "step":
                rollout.step += 1
                rollout.step_figures = rollout.new_figures()
                ROLLOUT_TRAFFIC.labels(name).set(rollout.traffic)
                await self._emit(rollout, "stepped", decision.reason, tests=decision.comparisons)
            elif decision.action in ("rollback", "inconclusive"):
                self.active.pop(name, None)
                ROLLOUT_TRAFFIC.labels(name).set(0)
                action = "rolled_back" if decision.action == "rollback" else "inconclusive"
                await self._emit(rollout, action, decision.reason, tests=decision.comparisons)
            elif decision.action == "promote":
                # the step is made first so the champion's move names it as its cause; it is published once
                # the registry has moved the champion, so a refused promotion never shows as promoted
                promoted = rollout.event("promoted", decision.reason, self.policy.alpha, 1.0, decision.comparisons)
                await self._promote(name, rollout.candidate.version, decision.reason, promoted.event_id)
                self.guard.serve(name, rollout.candidate, baseline=rollout.figures["champion"])
                self.active.pop(name, None)
                ROLLOUT_TRAFFIC.labels(name).set(0)
                await self._publish_step(rollout, promoted)
        except Exception as exc:
            log.error("rollout decision failed; rolling back", action=decision.action, error=repr(exc))
            self.active.pop(name, None)
            await self._emit(rollout, "rolled_back", f"{decision.action} failed: {exc}")
        finally:
            rollout.deciding = False

    async def _emit(
        self,
        rollout: Rollout,
        action: str,
        reason: str,
        traffic: float | None = None,
        tests: dict[str, Comparison] | None = None,
    ) -> RolloutStepped:
        return await self._publish_step(rollout, rollout.event(action, reason, self.policy.alpha, traffic, tests))

    async def _publish_step(self, rollout: Rollout, event: RolloutStepped) -> RolloutStepped:
        """Publish a step of the rollout; it causes the next."""
        rollout.cause = event
        self.remember(event)
        log.info("rollout", **event.model_dump(include={"action", "model_name", "candidate_version", "step", "reason"}))
        await self._publish(event)
        return event

    def published(self, event: RolloutStepped) -> bool:
        """Whether this replica published ``event`` (among the steps it remembers)."""
        return any(mine.event_id == event.event_id for mine in self.history)

    def remember(self, event: RolloutStepped) -> None:
        self.history.append(event)
        del self.history[:-200]
        if event.action in ENDED:
            self.decided.add((event.model_name, event.candidate_version))
