"""Decisions asked over HTTP (or by the alias reconciler) travel as ``registry.commands``, keyed by model.

The replica that owns a model's partition carries out that model's commands one at a time, beside its
candidates and rollout ends, and publishes each outcome on ``registry.answers``; every replica reads the
answers, and the one whose request waits for a command answers the caller. So two replicas never decide
about one model at once, and no lock is shared or needed.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from uuid import UUID

import structlog
from faststream.kafka import KafkaBroker

from flywheel.common.kafka import publish_event
from flywheel.schemas import RegistryAnswered, RegistryCommand, utc_now

log = structlog.get_logger(__name__)

GRACE_S = 2.0  # an answer published just as the command expired still reaches its asker


class Unanswered(TimeoutError):
    """No replica answered the command in time (503): it expired, and is refused if handled later."""


class CommandDesk:
    """Publishes commands and hands each its answer when it comes back on ``registry.answers``."""

    def __init__(self, broker: KafkaBroker, timeout_s: float) -> None:
        self.broker = broker
        self.timeout_s = timeout_s
        self._waiting: dict[UUID, asyncio.Future[RegistryAnswered]] = {}

    async def ask(self, command: RegistryCommand) -> RegistryAnswered:
        """Publish ``command`` (expiring ``timeout_s`` from now) and wait for its answer."""
        command = command.model_copy(update={"expires_at": utc_now() + timedelta(seconds=self.timeout_s)})
        waiting = asyncio.get_running_loop().create_future()
        self._waiting[command.event_id] = waiting  # before publishing: the answer may come at once
        try:
            await publish_event(self.broker, command)
            return await asyncio.wait_for(waiting, self.timeout_s + GRACE_S)
        except TimeoutError as exc:
            raise Unanswered(
                f"the registry did not carry out {command.action} of {command.model_name!r} within "
                f"{self.timeout_s:.0f} s (it will not be carried out later); try again"
            ) from exc
        finally:
            self._waiting.pop(command.event_id, None)

    async def tell(self, command: RegistryCommand) -> None:
        """Publish ``command`` without waiting for its answer (the reconciler's)."""
        await publish_event(self.broker, command)

    def on_answer(self, answered: RegistryAnswered) -> None:
        """An answer read from ``registry.answers``: the waiting request gets it; others' are ignored."""
        waiting = self._waiting.get(answered.command_id)
        if waiting is not None and not waiting.done():
            waiting.set_result(answered)


def expired(command: RegistryCommand) -> bool:
    """Whether the asker stopped waiting: carrying it out now would act behind its back."""
    return command.expires_at is not None and command.expires_at < utc_now()


def answer_to(command: RegistryCommand, status: int, detail: str = "") -> RegistryAnswered:
    return RegistryAnswered(
        producer="registry",
        model_name=command.model_name,
        command_id=command.event_id,
        status=status,
        detail=detail[:500],
        **command.caused(),
    )


async def reconcile(moved: list[str], desk: CommandDesk, seen_by: str) -> list[str]:
    """Ask the owner of each model whose champion alias was moved by hand to follow or put it back."""
    for name in moved:
        await desk.tell(RegistryCommand(producer="registry", model_name=name, action="reconcile", actor=seen_by))
    return moved
