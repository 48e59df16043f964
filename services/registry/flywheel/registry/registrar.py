"""The registry's use cases: gate a candidate, write down a rollout's end, move the champion, explain lineage.

Only this class (and the commands it carries out, ``commanded.py``) writes to the MLflow Model Registry.
Two decisions about one model never interleave without a lock: each model's candidates, rollout ends
and commands arrive keyed by model on one partition number of their topics, which one replica owns and
handles one message at a time (``subscribers.py``).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import structlog

from flywheel.common.datasets import DatasetCatalog
from flywheel.common.kafka import InvalidMessage, with_derived_ids
from flywheel.common.modelspec import GateSpec, load_model_spec
from flywheel.common.tracking import Tags
from flywheel.registry import metrics
from flywheel.registry.decisions import (
    REBUILD,
    Move,
    approved,
    chain_of,
    rebuild_tags,
    rejected,
    rollout_ended,
)
from flywheel.registry.evidence import gather
from flywheel.registry.gates import failed, judge, resolve
from flywheel.registry.lineage import DECISION_EVENT, TRAINED_EVENT, lineage
from flywheel.registry.modelstore import (
    CHAIN,
    CORRELATION,
    GATE_FIGURES,
    GATE_SPEC,
    GATES,
    METRICS,
    STATUS,
    TAG_LIMIT,
    ModelStore,
    NotFound,
    figures_tag,
    gates_tag,
    now,
)
from flywheel.registry.settings import RegistrySettings
from flywheel.schemas import ChampionChanged, Event, GateResult, ModelTrained, RolloutStepped

log = structlog.get_logger(__name__)
T = TypeVar("T")

HELD_EVENT = "flywheel.held_event"
ROLLOUT_EVENT = "flywheel.rollout_event_id"
ENDED_KEPT = {"rolled_back", "inconclusive", "aborted"}  # rollout actions that end it with the champion kept


def held(trained: ModelTrained) -> str:
    """The candidate's event as a tag value; params go first if it would not fit a tag."""
    text = trained.model_dump_json()
    if len(text) > TAG_LIMIT:
        text = trained.model_copy(
            update={"lineage": trained.lineage.model_copy(update={"params": {}})}
        ).model_dump_json()
    return text


class Conflict(ValueError):
    """The request contradicts the model's current state (409)."""


class Registrar:
    def __init__(self, store: ModelStore, catalog: DatasetCatalog, settings: RegistrySettings) -> None:
        self.store = store
        self.catalog = catalog
        self.settings = settings

    # -- candidates --------------------------------------------------------------------

    async def on_trained(self, trained: ModelTrained) -> list[Event]:
        """Gate a new candidate, register it, and approve or reject it: the events of the decision.

        Idempotent by run: a redelivered ``ModelTrained`` whose version exists finishes a
        decision a crash interrupted, or returns the same decision's events again (their ids
        derive from the trained event, so consumers see them once).
        """
        _, events = await asyncio.to_thread(self._gate_and_register, trained)
        return events

    def gates_for(self, trained: ModelTrained, champion: str | None) -> tuple[list[GateResult], dict[str, str]]:
        """The candidate's gate results, and the tags that explain them (the gates applied, the figures)."""
        gates = resolve(self.declared_gates(trained), self.settings.default_gates(trained.lineage.task))
        figures = gather(self.store, trained, champion)
        explained = {
            GATE_SPEC: gates.model_dump_json(),
            GATE_FIGURES: figures_tag({name: f.as_dict() for name, f in figures.items()}),
        }
        return judge(gates, figures, champion), explained

    def declared_gates(self, trained: ModelTrained) -> GateSpec:
        """The gates the run's model spec declares; none (the registry's defaults) if it cannot be read."""
        lineage = trained.lineage
        try:
            spec = load_model_spec(self.settings.datasets_dir, lineage.dataset, lineage.model_spec)
        except (OSError, ValueError) as exc:
            log.warning(
                "model spec unreadable; gating with the registry's defaults", spec=lineage.model_spec, error=str(exc)
            )
            return GateSpec()
        if spec.task != lineage.task:  # the spec changed task since the run: its gates' metrics are not the run's
            log.warning("model spec's task is not the run's; gating with the registry's defaults", spec=spec.spec_name)
            return GateSpec()
        return spec.gates

    def _gate_and_register(self, trained: ModelTrained) -> tuple[str | None, list[Event]]:
        name = trained.model_name
        existing = self.store.version_for_run(name, trained.run_id)
        if existing is not None:  # a redelivered ModelTrained: registered already
            log.info("candidate already registered", model_name=name, version=existing, run_id=trained.run_id)
            return existing, self.decided(trained, existing)
        if not self.store.run_exists(trained.run_id):  # nothing to register: never a version
            raise InvalidMessage(f"run {trained.run_id!r} of model {name!r} is not in MLflow")
        champion = self.store.aliases(name).get("champion")
        gates, explained = self.gates_for(trained, champion)
        passed = not failed(gates)
        status = "rejected" if not passed else ("pending_approval" if self.settings.manual_approval else "approved")
        if trained.rebuild_of is not None:  # an audit of a version: gated for the record, never a candidate
            status = REBUILD
        tags = {
            STATUS: status,
            GATES: gates_tag(gates),
            METRICS: json.dumps(trained.metrics),
            CHAIN: json.dumps(chain_of(trained)),
            CORRELATION: str(trained.correlation_id),
            TRAINED_EVENT: str(trained.event_id),
            "flywheel.champion_at_gate": champion or "",
            **explained,
            Tags.DATASET: trained.lineage.dataset,
            Tags.DATASET_VERSION: trained.lineage.dataset_version,
            Tags.CODE_VERSION: trained.lineage.code_version,
            **{f"flywheel.gate.{g.gate}": "passed" if g.passed else "failed" for g in gates},
            **(rebuild_tags(trained, self.store.run(trained.run_id).data.tags) if trained.rebuild_of else {}),
        }
        version = self.store.register(name, trained.model_uri, trained.run_id, tags)
        metrics.DECISIONS.labels(name, status).inc()
        log.info(
            "candidate gated",
            model_name=name,
            version=version,
            status=status,
            failed=failed(gates),
            correlation_id=str(trained.correlation_id),
        )
        if status == REBUILD:  # no approval, so no rollout, and the champion stays where it is
            return version, []
        if not passed:
            event = with_derived_ids(trained, [rejected(trained, version, gates, champion)])[0]
            self.store.set_tags(name, version, {DECISION_EVENT: str(event.event_id)})
            return version, [event]
        if self.settings.manual_approval:  # the event is kept with the version, to approve it later
            self.store.set_tags(name, version, {HELD_EVENT: held(trained)})
            return version, []
        return version, self.accept(trained, version, gates, champion, actor="registry", reason="passed all gates")

    def decided(self, trained: ModelTrained, version: str) -> list[Event]:
        """The events of a decision already stored with ``version``; an interrupted one is finished."""
        tags = dict(self.store.version(trained.model_name, version).tags or {})
        gates = [GateResult.model_validate(g) for g in json.loads(tags.get(GATES, "[]"))]
        champion = tags.get("flywheel.champion_at_gate") or None
        status = tags.get(STATUS)
        if tags.get(TRAINED_EVENT, str(trained.event_id)) != str(trained.event_id) and (
            DECISION_EVENT in tags or status == "pending_approval"
        ):  # another completion of a decided run (training answered a repeat with it): decided once, said once
            log.info("run decided already; nothing to publish again", model_name=trained.model_name, version=version)
            return []
        if status == "rejected":
            return [rejected(trained, version, gates, champion)]
        if status != "approved":  # held for a human: nothing to publish until approval
            return []
        if DECISION_EVENT not in tags:  # crashed between registering and accepting
            return self.accept(trained, version, gates, champion, actor="registry", reason="passed all gates")
        approval = with_derived_ids(trained, [approved(trained, version, gates, champion)])[0]
        if champion is not None:
            return [approval]
        return [approval, Move.first(trained.model_name, version, "registry", approval).event()]

    def accept(
        self,
        trained: ModelTrained,
        version: str,
        gates: list[GateResult],
        champion: str | None,
        actor: str,
        reason: str,
    ) -> list[Event]:
        """Challenger when a champion exists; otherwise the first champion, directly."""
        name = trained.model_name
        # the decision's id derives from the trained event, so a redelivery re-publishes the same one
        approval = with_derived_ids(trained, [approved(trained, version, gates, champion)])[0]
        events: list[Event] = [approval]
        if champion is not None:
            self.store.set_alias(name, "challenger", version)
        else:
            events.append(self.move(Move.first(name, version, actor, approval), {}))
        # the decision's event id last: with it the decision is complete (a redelivery only re-publishes)
        self.store.set_tags(
            name,
            version,
            {
                STATUS: "approved",
                DECISION_EVENT: str(approval.event_id),
                "flywheel.approved_by": actor,
                "flywheel.approved_at": now(),
                "flywheel.approve_reason": reason[:1000],
            },
        )
        return events

    def move(self, move: Move, aliases: dict[str, str], command_id: uuid.UUID | None = None) -> ChampionChanged:
        """Move the champion: aliases, the tags of the version concerned, the history (with the command that
        asked, so that its redelivery finds the move made), the event."""
        name = move.model_name
        sets, deletes = move.aliases(aliases)
        for alias, version in sets.items():
            self.store.set_alias(name, alias, version)
        for alias in deletes:
            self.store.delete_alias(name, alias)
        at = now()
        tagged, tags = move.tags(at)
        if tagged is not None:
            self.store.set_tags(name, tagged, tags)
        entry = move.entry(at) | ({"command_id": str(command_id)} if command_id else {})
        self.store.record(name, entry, self.settings.history_kept)
        self.store.record_champion(name, move.version)  # last: an alias ahead of it is the registry's own move
        metrics.CHAMPION_MOVES.labels(name, move.action).inc()
        log.info(
            "champion moved",
            model_name=name,
            action=move.action,
            version=move.version,
            previous=move.previous,
            actor=move.actor,
        )
        return move.event()

    # -- rollouts -----------------------------------------------------------------------------

    async def on_rollout(self, rollout: RolloutStepped) -> list[Event]:
        """Write down a rollout that ended with the champion kept (rolled back, inconclusive, aborted): its
        candidate loses ``challenger`` and is marked with why; nothing to publish (the champion did not move).

        Idempotent by the rollout event: its id is kept with the version once written.
        """
        if rollout.action not in ENDED_KEPT:
            return []
        await asyncio.to_thread(self._rollout_ended, rollout)
        return []

    def _rollout_ended(self, rollout: RolloutStepped) -> None:
        name, version = rollout.model_name, rollout.candidate_version
        try:
            tags = dict(self.store.version(name, version).tags or {})
        except NotFound as exc:
            if rollout.action == "aborted":  # a candidate that never loaded may not be registered at all
                return
            raise InvalidMessage(f"rollout of {name} v{version}, which the registry does not hold") from exc
        if tags.get(ROLLOUT_EVENT) == str(rollout.event_id):  # a redelivery: written already
            return
        aliases = self.store.aliases(name)
        if aliases.get("champion") == version:  # serving's guard moves a champion back through rollback()
            log.warning("rollout that ended names the champion; left to the champion's rollback", version=version)
            return
        at = rollout.occurred_at.isoformat()
        self.store.set_tags(name, version, rollout_ended(rollout.action, rollout.producer, at, rollout.reason))
        entry = {"action": rollout.action, "version": version, "previous": rollout.champion_version}
        entry |= {"actor": rollout.producer, "reason": rollout.reason, "at": at, "event_id": str(rollout.event_id)}
        self.store.record(name, entry, self.settings.history_kept)
        if aliases.get("challenger") == version:  # after the status: a reader never sees it gone but "approved"
            self.store.delete_alias(name, "challenger")
        self.store.set_tags(name, version, {ROLLOUT_EVENT: str(rollout.event_id)})  # last: the write is complete
        metrics.DECISIONS.labels(name, rollout.action).inc()
        log.info("rollout ended, champion kept", model_name=name, version=version, action=rollout.action)

    # -- reads ------------------------------------------------------------------------------

    def describe_sync(self, name: str) -> dict[str, Any]:
        return self.store.describe(name)

    def describe_version_sync(self, name: str, version: str) -> dict[str, Any]:
        mv = self.store.version(name, version)
        return self.store.describe_version(mv, self.store.aliases(name))

    def lineage_sync(self, name: str, version: str) -> dict[str, Any]:
        """What a version was made from and why it exists, back to the triggering event."""
        return lineage(self.store, self.catalog, name, version)

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.to_thread(fn, *args)


__all__ = ["Conflict", "NotFound", "Registrar"]
