"""Pure decisions of the registry: which events a gate outcome or an alias move produces."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal
from uuid import UUID

from flywheel.registry.gates import failed
from flywheel.schemas import ChampionChanged, GateResult, ModelApproved, ModelRejected, ModelTrained

PRODUCER = "registry"
STATUS = "flywheel.status"  # approved, pending_approval, rejected, rolled_back, or inconclusive / aborted (its rollout)
FIRST_MODEL = "first model"
REBUILD = "rebuild"  # a version retrained from another's lineage: an audit, never served
UNPROMOTABLE = frozenset({"rejected", "pending_approval", REBUILD})  # statuses a version cannot be champion with
HAND_MOVE = "champion alias set in MLflow, outside the registry"


def may_serve(status: str | None) -> bool:
    """Whether a version may take live traffic without an operator's promotion: it passed its gates or an
    operator approved it (it may since have been rolled back or ended a rollout inconclusive); not one that was
    rejected, awaits approval, or was never judged by the registry (``unknown``), nor one that does not exist.

    >>> [may_serve(s) for s in ("approved", "rolled_back", "rejected", "pending_approval", "unknown", None)]
    [True, True, False, False, False, False]
    """
    return status is not None and status != "unknown" and status not in UNPROMOTABLE


def chain_of(trained: ModelTrained) -> list[str]:
    """The causation chain up to and including the training run's event."""
    return [*trained.lineage.causation_chain, str(trained.event_id)]


def rejected(trained: ModelTrained, version: str, gates: list[GateResult], champion: str | None) -> ModelRejected:
    """A candidate that failed at least one gate, with the gates it failed."""
    return ModelRejected(
        producer=PRODUCER,
        model_name=trained.model_name,
        run_id=trained.run_id,
        metrics=trained.metrics,
        gates=gates,
        failed_gates=failed(gates),
        version=version,
        model_uri=f"models:/{trained.model_name}/{version}",
        champion_version=champion,
        causation_chain=chain_of(trained),
        **trained.caused(),
    )


def approved(trained: ModelTrained, version: str, gates: list[GateResult], champion: str | None) -> ModelApproved:
    """A candidate that passed every gate: the challenger, or the first champion when ``champion`` is None."""
    return ModelApproved(
        producer=PRODUCER,
        model_name=trained.model_name,
        version=version,
        run_id=trained.run_id,
        model_uri=f"models:/{trained.model_name}/{version}",
        metrics=trained.metrics,
        gates=gates,
        champion_version=champion,
        causation_chain=chain_of(trained),
        **trained.caused(),
    )


def champion_changed(
    model_name: str,
    version: str,
    previous: str | None,
    action: str,
    actor: str,
    reason: str,
    correlation_id: UUID | None = None,
    causation_id: UUID | None = None,
) -> ChampionChanged:
    """The champion alias moved (promotion, first model, or rollback)."""
    envelope = {"correlation_id": correlation_id} if correlation_id else {}
    return ChampionChanged(
        producer=PRODUCER,
        model_name=model_name,
        version=version,
        previous_version=previous,
        action=action,
        actor=actor,
        reason=reason,
        causation_id=causation_id,
        **envelope,
    )


def rolled_back(actor: str, at: str, reason: str) -> dict[str, str]:
    """The tags of a version taken out of service: by a rollout, or as the champion rolled back.

    >>> rolled_back("serving", "t", "accuracy 0.61 vs champion 0.70")["flywheel.status"]
    'rolled_back'
    """
    return {
        STATUS: "rolled_back",
        "flywheel.rolled_back_by": actor,
        "flywheel.rolled_back_at": at,
        "flywheel.rollback_reason": reason[:1000],
    }


def rollout_ended(action: str, actor: str, at: str, reason: str) -> dict[str, str]:
    """The tags of a candidate whose rollout ended with the champion kept: ``rolled_back`` (worse),
    ``inconclusive`` (no significant difference in time) or ``aborted`` (superseded, failed to load).

    >>> rollout_ended("inconclusive", "serving", "t", "no significant difference")["flywheel.status"]
    'inconclusive'
    """
    if action == "rolled_back":
        return rolled_back(actor, at, reason)
    return {
        STATUS: action,
        "flywheel.rollout_ended_by": actor,
        "flywheel.rollout_ended_at": at,
        "flywheel.rollout_end_reason": reason[:1000],
    }


@dataclass(frozen=True)
class Move:
    """One move of the champion alias, whatever asked for it: the first model, a promotion, a rollback.

    ``version`` is the champion after the move, ``previous`` the one before it. The pure parts
    of the move (which aliases change, which version is tagged how, the history entry and the
    event) are here; the registrar applies them in one place.

    >>> move = Move("m", "promote", "2", "1", "ann", "canary ok")
    >>> move.aliases({"champion": "1", "challenger": "2"})
    ({'champion': '2', 'previous': '1'}, ['challenger'])
    >>> Move("m", "rollback", "1", "2", "ops", "worse").aliases({"champion": "2", "previous": "1"})
    ({'champion': '1'}, ['previous'])
    >>> Move("m", "rollback", "1", "2", "ops", "worse").tags("t")[0]
    '2'
    """

    model_name: str
    action: Literal["promote", "rollback"]
    version: str
    previous: str | None
    actor: str
    reason: str
    correlation_id: UUID | None = None
    causation_id: UUID | None = None

    @classmethod
    def first(cls, model_name: str, version: str, actor: str, cause: ModelApproved) -> Move:
        """The first model of a name becomes champion as it is approved."""
        return cls(model_name, "promote", version, None, actor, FIRST_MODEL, cause.correlation_id, cause.event_id)

    def aliases(self, current: dict[str, str]) -> tuple[dict[str, str], list[str]]:
        """The aliases to set and those to delete, given the model's ``current`` aliases."""
        if self.action == "rollback":
            return {"champion": self.version}, ["previous"]
        sets = {"champion": self.version, **({"previous": self.previous} if self.previous else {})}
        return sets, ["challenger"] if current.get("challenger") == self.version else []

    def tags(self, at: str) -> tuple[str | None, dict[str, str]]:
        """The version the move tags (the new champion, or the rolled-back one) and its tags."""
        if self.action == "rollback":
            return self.previous, rolled_back(self.actor, at, self.reason)
        tags = {
            "flywheel.promoted_by": self.actor,
            "flywheel.promoted_at": at,
            "flywheel.promote_reason": self.reason[:1000],
        }
        return self.version, tags

    def entry(self, at: str) -> dict[str, Any]:
        """The move in the model's history."""
        return {
            "action": self.action,
            "version": self.version,
            "previous": self.previous,
            "actor": self.actor,
            "reason": self.reason,
            "at": at,
        }

    def event(self) -> ChampionChanged:
        return champion_changed(
            self.model_name,
            self.version,
            self.previous,
            self.action,
            self.actor,
            self.reason,
            self.correlation_id,
            self.causation_id,
        )


def rebuild_tags(trained: ModelTrained, run_tags: dict[str, str]) -> dict[str, str]:
    """A rebuilt version's tags: which version it rebuilt, and the run's comparison with it; none otherwise.

    >>> trained = ModelTrained.model_construct(rebuild_of="3")
    >>> rebuild_tags(trained, {"flywheel.rebuild.equal": "true", "flywheel.window": "{}"})
    {'rebuild_of': '3', 'flywheel.rebuild.equal': 'true'}
    >>> rebuild_tags(ModelTrained.model_construct(rebuild_of=None), {"flywheel.rebuild.equal": "true"})
    {}
    """
    if trained.rebuild_of is None:
        return {}
    compared = {k: v for k, v in run_tags.items() if k.startswith("flywheel.rebuild.")}
    return {"rebuild_of": trained.rebuild_of, **compared}
