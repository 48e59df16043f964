"""The guard after a promotion: a champion significantly worse than its predecessor in its bake period is rolled back.

A rollout judges a candidate on a share of traffic; the guard keeps judging it on all of
it for ``bake_s`` seconds after it became champion (by a rollout or by an operator's
promotion), against the figures its predecessor had, with the rollout's sequential test
(valid on every label it looks at), on the same metrics: a classifier's accuracy, a
regressor's mean absolute error, and both's error and slow rates. ``judge`` is pure:
figures in, a reason out.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog

from flywheel.serving.metrics import BAKE_ROLLBACKS
from flywheel.serving.models import ServedModel
from flywheel.serving.rollout import Policy, VariantFigures, judge
from flywheel.serving.settings import ServingSettings

log = structlog.get_logger(__name__)
Rollback = Callable[[str, str], Awaitable[None]]


@dataclass
class Bake:
    """A new champion under watch until ``until`` (a wall-clock timestamp)."""

    model_name: str
    version: str
    previous_version: str
    baseline: VariantFigures
    until: float
    figures: VariantFigures = field(default_factory=VariantFigures)
    judged: bool = False


def judge_bake(bake: Bake, now: float, policy: Policy) -> str | None:
    """Why the baking champion must be rolled back, or None (also once its bake period is over).

    >>> p = Policy(min_labels=40)
    >>> bake = Bake("m", "2", "1", VariantFigures(labelled=100, correct=95), until=100.0)
    >>> bake.figures = VariantFigures(requests=60, labelled=60, correct=30)
    >>> print(judge_bake(bake, now=50.0, policy=p))
    in its bake period, version 2 is worse than version 1:
    accuracy 50.0% vs champion 95.0% (p=0.0000, 60 vs 100) is worse at level 1.67%
    >>> bake.figures = VariantFigures(requests=60, labelled=60, correct=55)
    >>> judge_bake(bake, now=50.0, policy=p) is None
    True
    >>> judge_bake(bake, now=150.0, policy=p) is None
    True
    >>> def regressor(mae, n):  # absolute errors spread by a third of their mean
    ...     return VariantFigures(requests=n, labelled=n, task="regression", abs_error_sum=n * mae,
    ...                           abs_error_sq_sum=(mae / 3) ** 2 * (n - 1) + n * mae**2)
    >>> bake = Bake("price", "2", "1", regressor(10.0, 100), until=100.0)
    >>> bake.figures = regressor(15.0, 60)
    >>> print(judge_bake(bake, now=50.0, policy=p))
    in its bake period, version 2 is worse than version 1:
    mae 15 vs champion 10 (p=0.0043, 60 vs 100) is worse at level 1.67%
    """
    if bake.judged or now > bake.until:
        return None
    why = judge(bake.figures, bake.baseline, policy).why_worse()
    if why is None:
        return None
    return f"in its bake period, version {bake.version} is worse than version {bake.previous_version}: {why}"


class Guard:
    """The bake periods of new champions, judged on every label; a failing champion is rolled back."""

    def __init__(
        self,
        settings: ServingSettings,
        policy: Policy,
        champions: dict[str, ServedModel],
        live: dict[str, VariantFigures],
        rollback: Rollback,
    ) -> None:
        self.settings, self.policy, self.champions, self.live = settings, policy, champions, live
        self._rollback = rollback
        self.bakes: dict[str, Bake] = {}
        self._tasks: set[asyncio.Task] = set()

    def serve(self, name: str, model: ServedModel, baseline: VariantFigures | None = None) -> None:
        """Switch the champion; a promotion (with its predecessor's figures) starts a bake period."""
        previous = self.champions.get(name)
        self.champions[name] = model
        before = self.live.pop(name, None)
        baseline = baseline if baseline is not None else before
        if previous is None or baseline is None or self.settings.bake_s <= 0:
            return
        if previous.task != model.task:  # a regressor's errors say nothing about a classifier's accuracy
            log.info("no bake period: the new champion is of another task", model=name, task=model.task)
            return
        self.bakes[name] = Bake(name, model.version, previous.version, baseline, time.time() + self.settings.bake_s)

    def check(self, name: str) -> None:
        bake = self.bakes.get(name)
        champion = self.champions.get(name)
        if bake is None or champion is None or champion.version != bake.version:
            return
        bake.figures = self.live.get(name) or VariantFigures(task=champion.task)
        why = judge_bake(bake, time.time(), self.policy)
        if time.time() > bake.until:
            self.bakes.pop(name, None)
        if why is None:
            return
        bake.judged = True
        task = asyncio.get_running_loop().create_task(self._roll_back(bake, why))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _roll_back(self, bake: Bake, why: str) -> None:
        log.warning("champion worse in its bake period; rolling back", model=bake.model_name, reason=why)
        try:
            await self._rollback(bake.model_name, why)
            BAKE_ROLLBACKS.labels(bake.model_name).inc()
            self.bakes.pop(bake.model_name, None)
        except Exception as exc:  # judged again on the next label
            bake.judged = False
            log.error("bake-period rollback failed", model=bake.model_name, error=repr(exc))
