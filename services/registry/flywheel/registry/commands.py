"""Decisions asked over HTTP (or by the alias reconciler) travel as ``registry.commands``, keyed by model.

The replica that owns a model's partition carries out that model's commands one at a time, beside its
candidates and rollout ends, and publishes each outcome on ``registry.answers``; every replica reads the
answers, and the one whose request waits for a command answers the caller. So (between rebalances) two
replicas never decide about one model at once, and no lock is shared or needed.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
from datetime import timedelta
from uuid import UUID

import structlog
from faststream.kafka import KafkaBroker

from flywheel.common.kafka import publish_event
from flywheel.schemas import RegistryAnswered, RegistryCommand, utc_now

log = structlog.get_logger(__name__)

# A command started just before it expires has this long to be carried out and answered (a few MLflow calls;
# clocks of replicas apart by a little): with the 20 s default, an asker waits 27 s, below serving's 30.
GRACE_S = 7.0


class Unanswered(TimeoutError):
    """No replica answered the command in time (503): it expired, and is refused if handled later."""


def signature(secret: str, command: RegistryCommand) -> str:
    """The command's HMAC-SHA256 by ``secret``, over every field that says what to do and when.

    >>> c = RegistryCommand(model_name="m", action="rollback", actor="ann")
    >>> signature("s", c) == signature("s", c) != signature("t", c)
    True
    >>> signature("s", c) != signature("s", c.model_copy(update={"actor": "mallory"}))
    True
    """
    signed = "|".join(
        str(part)
        for part in (
            command.event_id,
            command.model_name,
            command.action,
            command.version,
            command.actor,
            command.reason,
            command.expires_at.isoformat() if command.expires_at else None,
            command.correlation_id,
            command.causation_id,
        )
    )
    return base64.b64encode(hmac.new(secret.encode(), signed.encode(), hashlib.sha256).digest()).decode()


def signed_by(secret: str, command: RegistryCommand) -> bool:
    return hmac.compare_digest(command.signature, signature(secret, command))


class CommandDesk:
    """Publishes signed commands and hands each its answer when it comes back on ``registry.answers``."""

    def __init__(self, broker: KafkaBroker, timeout_s: float, secret: str) -> None:
        self.broker = broker
        self.timeout_s = timeout_s
        self.secret = secret
        self._waiting: dict[UUID, asyncio.Future[RegistryAnswered]] = {}

    async def ask(self, command: RegistryCommand) -> RegistryAnswered:
        """Publish ``command`` (expiring ``timeout_s`` from now) and wait for its answer."""
        command = command.model_copy(update={"expires_at": utc_now() + timedelta(seconds=self.timeout_s)})
        waiting = asyncio.get_running_loop().create_future()
        self._waiting[command.event_id] = waiting  # before publishing: the answer may come at once
        try:
            async with asyncio.timeout(self.timeout_s + GRACE_S):  # the publish too: a broker away is a 503
                await self.tell(command)
                return await waiting
        except TimeoutError as exc:
            raise Unanswered(
                f"the registry did not answer {command.action} of {command.model_name!r} within "
                f"{self.timeout_s:.0f} s; a command not started by then is refused, never carried out later "
                f"(GET /models/{command.model_name} shows whether it was)"
            ) from exc
        finally:
            self._waiting.pop(command.event_id, None)

    async def tell(self, command: RegistryCommand) -> None:
        """Publish ``command``, signed, without waiting for its answer (the reconciler's)."""
        await publish_event(self.broker, command.model_copy(update={"signature": signature(self.secret, command)}))

    def on_answer(self, answered: RegistryAnswered) -> None:
        """An answer read from ``registry.answers``: the waiting request gets it; others' are ignored."""
        waiting = self._waiting.get(answered.command_id)
        if waiting is not None and not waiting.done():
            waiting.set_result(answered)


def expired(command: RegistryCommand) -> bool:
    """Whether it is too late to start it: its asker gives up ``GRACE_S`` after ``expires_at``, and a command
    carried out later would act behind its back."""
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
