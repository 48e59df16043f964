"""Carrying out ``registry.commands``: promote, roll back, approve, follow or put back a hand-moved alias.

Only the replica that owns a model's partition runs these, one command at a time (``subscribers.py``), so
no two decisions about a model interleave. Each command is idempotent by its id: a redelivery (a crash
after the move, before the commit) finds its move in the history and answers the same again.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from uuid import UUID

import structlog
from mlflow.exceptions import MlflowException

from flywheel.common.kafka import InvalidMessage, derived_id, with_derived_ids
from flywheel.registry.aliases import AliasCheck
from flywheel.registry.commands import answer_to, expired, signed_by
from flywheel.registry.decisions import HAND_MOVE, UNPROMOTABLE, Move, approved
from flywheel.registry.modelstore import CORRELATION, GATES, HISTORY, RECORDED_CHAMPION, REFUSED, STATUS, NotFound, now
from flywheel.registry.registrar import HELD_EVENT, Conflict, Registrar
from flywheel.schemas import Event, GateResult, ModelTrained, RegistryCommand

log = structlog.get_logger(__name__)

APPROVE_COMMAND = "flywheel.approve_command"  # the command that approved a held version: its redelivery's answer
APPROVED_BESIDE = "flywheel.approved_beside"  # the champion when it was approved ("": none, it became the first)


class Expired(Exception):
    """A command reached too late to be started (its asker has been told it was not carried out)."""


class CommandHandler:
    def __init__(self, registrar: Registrar, secret: str) -> None:
        self.registrar = registrar
        self.store = registrar.store
        self.secret = secret

    async def on_command(self, command: RegistryCommand) -> list[Event]:
        """The events a command caused, its answer last (ids derived from it, or from the candidate's run).

        One not signed by a registry replica is dead-lettered, never carried out. One carried out before (a
        redelivery) answers as it did; one reached too late to start is refused (503). A domain refusal is an
        answer (404, 409); anything else raises, to be retried and at last dead-lettered.
        """
        if not signed_by(self.secret, command):
            raise InvalidMessage("registry command not signed by a registry replica: not carried out")
        try:
            events = await asyncio.to_thread(self._carry_out, command)
        except Expired:
            return self._answered(command, [], 503, "reached too late to start: not carried out")
        except NotFound as exc:
            return self._answered(command, [], 404, str(exc))
        except Conflict as exc:
            return self._answered(command, [], 409, str(exc))
        except MlflowException as exc:
            if exc.error_code not in REFUSED:
                raise
            return self._answered(command, [], 404, f"no such model or version: {exc.message[:300]}")
        return self._answered(command, events, 200)

    @staticmethod
    def _answered(command: RegistryCommand, events: list[Event], status: int, detail: str = "") -> list[Event]:
        answer = answer_to(command, status, detail)
        return [*events, answer.model_copy(update={"event_id": derived_id(command, len(events), answer)})]

    def _carry_out(self, command: RegistryCommand) -> list[Event]:
        if command.action == "reconcile":
            return with_derived_ids(command, self.reconcile(command.model_name, command.actor))
        if command.action == "approve":
            return self._approve(command)
        done = self._done_before(command)
        if done is not None:
            return done
        if expired(command):
            raise Expired
        move = self._promotion(command) if command.action == "promote" else self._rollback(command)
        aliases = self.store.aliases(command.model_name)
        return with_derived_ids(command, [self.registrar.move(move, aliases, command.event_id)])

    def _done_before(self, command: RegistryCommand) -> list[Event] | None:
        """A redelivered promote or rollback: its move, found in the history by the command's id, said again."""
        history = json.loads(self.store.model_tags(command.model_name).get(HISTORY, "[]"))
        entry = next((h for h in history if h.get("command_id") == str(command.event_id)), None)
        if entry is None:
            return None
        move = self._commanded(command, entry["action"], entry["version"], entry.get("previous"))
        return with_derived_ids(command, [move.event()])

    def _promotion(self, command: RegistryCommand) -> Move:
        name, version = command.model_name, command.version or ""
        status = (self.store.version(name, version).tags or {}).get(STATUS, "unknown")
        if status in UNPROMOTABLE:
            raise Conflict(f"{name} v{version} is {status}; only approved versions can be promoted")
        champion, recorded = self.store.aliases(name).get("champion"), self._recorded(name)
        if champion == version and recorded != version:  # a move cut short after its alias: finish it
            return self._commanded(command, "promote", version, recorded)
        if champion == version:
            raise Conflict(f"{name} v{version} is already the champion")
        return self._commanded(command, "promote", version, champion)

    def _rollback(self, command: RegistryCommand) -> Move:
        name = command.model_name
        recorded = self._recorded(name)  # NotFound for a model that does not exist
        aliases = self.store.aliases(name)
        previous, champion = aliases.get("previous"), aliases.get("champion")
        if previous is None and champion is not None and recorded not in (None, champion):
            return self._commanded(command, "rollback", champion, recorded)  # cut short after its aliases: finish it
        if previous is None:
            raise Conflict(f"{name} has no previous champion to roll back to")
        return self._commanded(command, "rollback", previous, champion)

    def _recorded(self, name: str) -> str | None:
        """The champion the registry last recorded having moved (an alias ahead of it: a move not finished)."""
        return self.store.model_tags(name).get(RECORDED_CHAMPION)

    def _commanded(self, command: RegistryCommand, action: Any, version: str, previous: str | None) -> Move:
        """The move a command makes: in the promoted version's loop, caused by what asked (a rollout's promoted
        step) or by the command itself."""
        correlation = None
        if action == "promote":
            correlation = (self.store.version(command.model_name, version).tags or {}).get(CORRELATION)
        correlation_id = UUID(correlation) if correlation else command.correlation_id
        causation_id = command.causation_id or command.event_id
        return Move(
            command.model_name, action, version, previous, command.actor, command.reason, correlation_id, causation_id
        )

    def _approve(self, command: RegistryCommand) -> list[Event]:
        """Release a candidate held for manual approval (its events derive from its run, as if it passed)."""
        name, version = command.model_name, command.version or ""
        tags = dict(self.store.version(name, version).tags or {})
        if HELD_EVENT not in tags:
            raise Conflict(f"{name} v{version} is {tags.get(STATUS, 'unknown')}, not awaiting approval")
        trained = ModelTrained.model_validate_json(tags[HELD_EVENT])
        gates = [GateResult.model_validate(g) for g in json.loads(tags.get(GATES, "[]"))]
        if tags.get(STATUS) == "approved" and tags.get(APPROVE_COMMAND) == str(command.event_id):
            champion = tags.get(APPROVED_BESIDE) or None  # a redelivery: the same events, as they were
            approval = with_derived_ids(trained, [approved(trained, version, gates, champion)])[0]
            first = [Move.first(name, version, command.actor, approval).event()] if champion is None else []
            return with_derived_ids(trained, [approval, *first])
        if tags.get(STATUS) != "pending_approval":
            raise Conflict(f"{name} v{version} is {tags.get(STATUS, 'unknown')}, not awaiting approval")
        if expired(command):
            raise Expired
        champion = self.store.aliases(name).get("champion")
        self.store.set_tags(name, version, {APPROVE_COMMAND: str(command.event_id), APPROVED_BESIDE: champion or ""})
        events = self.registrar.accept(trained, version, gates, champion, actor=command.actor, reason=command.reason)
        return with_derived_ids(trained, events)

    # -- aliases moved outside the registry ---------------------------------------------------

    def moved_by_hand(self) -> list[str]:
        """The models whose champion alias is not the one the registry recorded: each to reconcile."""
        models = self.store.champions()
        return [name for name, aliases, tags in models if aliases.get("champion") != tags.get(RECORDED_CHAMPION)]

    def reconcile(self, name: str, seen_by: str) -> list[Event]:
        """Follow or put back ``name``'s champion alias if it was moved in MLflow by hand
        (``flywheel.registry.aliases``); ``seen_by``, what noticed (poller or webhook), goes in the audit."""
        events: list[Event] = []
        for model, aliases, tags in self.store.champions():
            found, recorded = aliases.get("champion"), tags.get(RECORDED_CHAMPION)
            if model != name or found == recorded:
                continue
            check = AliasCheck(name, recorded, found, self.store.status(name, found) if found else None)
            verdict = check.verdict()
            if verdict == "adopt" and found is not None:
                self.store.record_champion(name, found)
            elif verdict == "follow" and found is not None:
                move = Move(name, "promote", found, recorded, "mlflow", f"{HAND_MOVE} (seen by the {seen_by})")
                events.append(self.registrar.move(move, aliases))
            elif verdict == "put_back" and recorded is not None:
                events.append(self._put_back(check))
        return events

    def _put_back(self, check: AliasCheck) -> Event:
        name, recorded = check.model_name, check.recorded
        assert recorded is not None
        self.store.set_alias(name, "champion", recorded)
        entry = {"action": "alias_put_back", "version": recorded, "previous": check.found, "actor": "registry"}
        self.store.record(name, {**entry, "reason": check.why_not(), "at": now()}, self.registrar.settings.history_kept)
        log.warning("champion alias moved by hand put back", model_name=name, found=check.found, why=check.why_not())
        return check.alert()
