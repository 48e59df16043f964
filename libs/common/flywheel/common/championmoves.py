"""Which ``models.champion`` moves a replica follows: one decision for serving and monitoring.

Every replica reads every move (the catalogue marks the topic ``every_replica``), and anyone on the
network can publish one. A move written before the replica loaded its state from the registry at
start is in that state already; any later one is followed only if the registry's ``champion``
alias names its version when it is read. A move naming a version the registry does not hold is
refused (dead-lettered).
"""

from __future__ import annotations

import structlog

from flywheel.common.history import Backlog
from flywheel.common.kafka import InvalidMessage
from flywheel.common.tracking import ChampionOf, Registered
from flywheel.schemas import MODELS_CHAMPION, ChampionChanged

log = structlog.get_logger(__name__)


class ChampionMoves:
    def __init__(self, champion_of: ChampionOf, registered: Registered) -> None:
        self.champion_of = champion_of
        self.registered = registered
        self.before_start = Backlog()

    async def mark_start(self, bootstrap_servers: str) -> None:
        """Call before loading state from the registry: the moves written until now are in it."""
        await self.before_start.mark(bootstrap_servers, MODELS_CHAMPION.name)

    async def to_follow(self, change: ChampionChanged, partition: int, offset: int) -> bool:
        """Whether this replica follows the move at ``partition``/``offset``; raises ``InvalidMessage`` for
        a version the registry does not hold (not worth a retry)."""
        if self.before_start.reflected(partition, offset):
            return False
        name, version = change.model_name, change.version
        current = await self.champion_of(name)
        if current == version:
            return True
        if not await self.registered(name, version):
            raise InvalidMessage(f"version {version!r} of model {name!r} is not in the registry")
        log.info("champion move not followed", model=name, version=version, registry_champion=current)
        return False
