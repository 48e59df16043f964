"""The rollouts a serving replica runs or follows, rebuilt from the ``models.rollout`` log.

At start, the replica guards again the promotions still in their bake period and follows every running
rollout (``elsewhere.py``), so their candidates keep their share of its traffic from its first request.
Each time the group tells it which models' approvals it holds (``ownership.py``), it resumes the running
rollouts of those models, hands over the ones it no longer owns, and credits to each resumed rollout the
labels joined since its last event (``catchup.py``) in the background.
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog

from flywheel.common.contracts import DataContract
from flywheel.common.history import read_events
from flywheel.schemas import MODELS_ROLLOUT
from flywheel.serving.catchup import credit_missed_labels
from flywheel.serving.engine import Engine
from flywheel.serving.ownership import Owns
from flywheel.serving.rollouts import RolloutLog

log = structlog.get_logger(__name__)


class Takeover:
    """Rebuilds and takes over rollouts for one replica's engine."""

    def __init__(self, bootstrap_servers: str, engine: Engine, contracts: dict[str, DataContract]) -> None:
        self.bootstrap_servers, self.engine, self.contracts = bootstrap_servers, engine, contracts
        self.labelled: Any = None  # the subscriber of predictions.labelled: where a catch-up stops
        self.catchups: set[asyncio.Task[int]] = set()

    async def folded(self) -> RolloutLog:
        return RolloutLog.fold([e async for e in read_events(self.bootstrap_servers, MODELS_ROLLOUT)])

    async def rebuild(self) -> None:
        """At start: re-arm recent bake periods and follow every running rollout until the group decides."""
        folded = await self.folded()
        self.engine.rearm(folded)
        for last in folded.running():
            await self.engine.prefetch(last)

    async def take(self, owns: Owns) -> None:
        """Resume the running rollouts of the models this replica ``owns`` now and follow those it no longer
        owns; the labels a resumed rollout's judge missed are credited in the background."""
        folded = await self.folded()
        resumed = set()
        for event in await self.engine.resume(folded, owns):
            log.info("rollout taken over", model=event.model_name, action=event.action, reason=event.reason)
            if event.action == "started":
                resumed.add(event.model_name)
        since = {last.model_name: last.occurred_at.timestamp() for last in folded.running()}
        since = {name: at for name, at in since.items() if name in resumed}
        catchup = asyncio.create_task(
            credit_missed_labels(self.bootstrap_servers, self.labelled, self.engine, since, self.contracts)
        )
        self.catchups.add(catchup)
        catchup.add_done_callback(self._caught_up)

    def _caught_up(self, task: asyncio.Task[int]) -> None:
        self.catchups.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:  # the judge lacks those labels
            log.error("missed labels not credited", error=repr(error))

    def stop(self) -> None:
        for task in list(self.catchups):
            task.cancel()
