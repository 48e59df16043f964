"""Registry decisions and rollouts."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from flywheel.schemas.envelope import Event, Name


class GateResult(BaseModel):
    """One quality gate applied to a candidate."""

    gate: str
    passed: bool
    metric: str | None = None
    value: float | None = None
    threshold: float | None = None
    message: str = ""
    slice: str | None = Field(default=None, description="The evaluation slice the figures are from (e.g. recent).")
    reference: float | None = Field(default=None, description="What the value was compared with (baseline, champion).")


class ModelApproved(Event):
    """A candidate passed its gates and is registered as challenger (``models.approved``)."""

    model_name: Name
    version: Name
    run_id: Name
    model_uri: str
    metrics: dict[str, float]
    gates: list[GateResult]
    champion_version: Name | None = None
    causation_chain: list[str] = Field(default=[], description="Event ids from the trigger on, oldest first.")


class ModelRejected(Event):
    """A candidate failed at least one gate (``models.rejected``)."""

    model_name: Name
    run_id: Name
    metrics: dict[str, float]
    gates: list[GateResult]
    failed_gates: list[str]
    version: Name | None = Field(default=None, description="The registered (rejected) version, if any.")
    model_uri: str | None = None
    champion_version: Name | None = None
    causation_chain: list[str] = Field(default=[], description="Event ids from the trigger on, oldest first.")


class ChampionChanged(Event):
    """The champion alias moved: promotion or rollback (``models.champion``)."""

    model_name: Name
    version: Name
    previous_version: Name | None = None
    action: Literal["promote", "rollback"]
    actor: str
    reason: str = ""


class RolloutStepped(Event):
    """A rollout started, moved a step, finished or was rolled back (``models.rollout``)."""

    model_name: Name
    candidate_version: Name
    champion_version: Name | None = None
    strategy: Literal["shadow", "canary", "ab", "blue_green"]
    action: Literal["started", "stepped", "promoted", "rolled_back", "aborted"]
    step: int = 0
    candidate_traffic: float = 0.0
    reason: str = ""
    figures: dict[str, dict[str, float]] = {}
