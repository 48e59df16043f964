"""Rollouts another serving replica runs, as this replica follows them on ``models.rollout``.

One replica reads a model's approval and runs its rollout: it judges the candidate and decides.
Every other replica follows the rollout's steps: it holds the candidate loaded and warm, and gives
it the same share of its own traffic, so that a canary at 10% answers 10% of every replica's
requests, not 10% of one replica's. Their answers reach the judge through ``predictions.labelled``
like its own. A promotion is then a swap on every replica rather than a load from MLflow.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog

from flywheel.schemas import RolloutStepped
from flywheel.serving.models import ServedModel
from flywheel.serving.rollouts import ENDED, RUNNING, Rollout

log = structlog.get_logger(__name__)
LET_GO = ENDED - {"promoted"}


@dataclass
class Followed:
    """Where a rollout run elsewhere stands: what this replica routes by (the names a ``Rollout`` uses too)."""

    candidate: ServedModel
    strategy: str
    champion_version: str | None
    traffic: float = 0.0
    heard_at: float = field(default_factory=time.monotonic)  # its last step, as this replica heard it


class RolloutsElsewhere:
    """The rollouts other replicas run, by model: their candidates held warm and their traffic shares."""

    def __init__(self, load: Callable[[str, str], Awaitable[ServedModel | None]], expire_s: float) -> None:
        """``expire_s``: a rollout not heard of for that long ended unheard (its end written while this replica
        was not reading, or its owner gone): its owner publishes a step at least once per rollout time limit."""
        self._load, self.expire_s = load, expire_s
        self._followed: dict[str, Followed] = {}

    async def follow(self, step: RolloutStepped) -> None:
        """Take a step of a rollout run elsewhere: load its candidate when first heard of (a replica started
        after the rollout did picks it up at its next step), move its share, let it go when it ends without
        a promotion. A promoted candidate is held until the champion's move swaps it in."""
        name, version = step.model_name, step.candidate_version
        held = self._followed.get(name)
        if step.action in LET_GO:
            if held is not None and held.candidate.version == version:
                del self._followed[name]
            return
        if step.action not in RUNNING:  # promoted: held as it is until the champion's move swaps it in
            return
        if held is None or held.candidate.version != version:
            try:
                model = await self._load(name, version)
            except Exception as exc:  # the promotion loads it again, and says so if it still fails
                log.warning("candidate failed to prefetch", model=name, version=version, error=repr(exc))
                return
            if model is None:
                return
            held = self._followed[name] = Followed(model, step.strategy, step.champion_version)
            log.info("candidate prefetched", model=name, version=version)
        held.strategy, held.champion_version = step.strategy, step.champion_version
        held.traffic = 0.0 if step.strategy == "shadow" else step.candidate_traffic
        held.heard_at = time.monotonic()

    def adopt(self, rollout: Rollout) -> None:
        """Follow a rollout this replica ran until now (its model's approvals were handed to another replica)."""
        self._followed[rollout.model_name] = Followed(
            rollout.candidate, rollout.strategy, rollout.champion_version, rollout.traffic
        )

    def routing(self, name: str, champion_version: str) -> Followed | None:
        """The rollout this replica's answers for ``name`` follow, if one runs elsewhere against the champion
        served here (a replica still on an older champion answers with that alone)."""
        held = self._followed.get(name)
        if held is not None and time.monotonic() - held.heard_at > self.expire_s:
            log.warning("followed rollout let go: no step heard", model=name, version=held.candidate.version)
            del self._followed[name]
            return None
        return held if held is not None and held.champion_version == champion_version else None

    def version(self, name: str) -> str | None:
        """The version of ``name`` this replica holds warm for a rollout run elsewhere, if any."""
        held = self._followed.get(name)
        return held.candidate.version if held is not None else None

    def take(self, name: str, version: str) -> ServedModel | None:
        """The held candidate when ``version`` of ``name`` becomes champion (the rollout ends here either way)."""
        held = self._followed.pop(name, None)
        return held.candidate if held is not None and held.candidate.version == version else None

    def forget(self, name: str) -> None:
        self._followed.pop(name, None)
