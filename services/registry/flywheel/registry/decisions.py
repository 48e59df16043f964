"""Pure decisions of the registry: which events a gate outcome or an alias move produces."""

from __future__ import annotations

from uuid import UUID

from flywheel.registry.gates import failed
from flywheel.schemas import ChampionChanged, GateResult, ModelApproved, ModelRejected, ModelTrained

PRODUCER = "registry"
FIRST_MODEL = "first model"


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
