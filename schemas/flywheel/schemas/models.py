"""Registry decisions and rollouts."""

from __future__ import annotations

from typing import Literal
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, Field

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


class SequentialTest(BaseModel):
    """One look of a rollout's sequential test (mSPRT) of the candidate's rate (or mean) against the champion's."""

    metric: str = Field(
        description="accuracy (of labelled answers; a regressor's: mae, the mean absolute error), error_rate "
        "(failed answers) or slow_rate."
    )
    candidate: float = Field(description="The candidate's rate (mae: its mean absolute error).")
    champion: float = Field(description="The champion's rate (mae: its mean absolute error).")
    difference: float = Field(description="Candidate minus champion.")
    candidate_n: int = Field(description="The candidate's sample: labels for accuracy, answers otherwise.")
    champion_n: int
    std_error: float = Field(
        description="Standard error of the difference (rates: pooled, under no difference; mae: unpooled)."
    )
    log_likelihood_ratio: float = Field(description="log of the mixture likelihood ratio; significant at log(1/alpha).")
    p_value: float = Field(description="1 / likelihood ratio at this look (always valid: any look may decide).")
    alpha: float = Field(description="This rate's level (the rollout's level split over the rates tested).")
    significant: bool


class RolloutStepped(Event):
    """A rollout started, moved a step, finished, was rolled back, or ended inconclusive (``models.rollout``).

    ``inconclusive``: no significant difference within the rollout's time limit; the champion stays.
    """

    model_name: Name
    candidate_version: Name
    champion_version: Name | None = None
    strategy: Literal["shadow", "canary", "ab", "blue_green"]
    action: Literal["started", "stepped", "promoted", "rolled_back", "aborted", "inconclusive"]
    step: int = 0
    candidate_traffic: float = 0.0
    reason: str = ""
    figures: dict[str, dict[str, float]] = {}
    tests: dict[str, SequentialTest] = Field(
        default={}, description="The sequential tests the decision rests on, by metric (those with enough sample)."
    )
    alpha: float | None = Field(default=None, description="The rollout's significance level (all rates together).")
    elapsed_s: float | None = Field(default=None, description="Seconds since the rollout started (or resumed).")
    superseded_by: Name | None = Field(
        default=None,
        description="The version whose approval ended this rollout (``aborted``): the retrain it came from goes on "
        "in that newer candidate, so the candidate did not end in vain.",
    )


class RegistryCommand(Event):
    """A decision the registry is asked to carry out (``registry.commands``), keyed by model.

    Every decision about one model (gating a candidate, promote, rollback, approve, following an
    alias moved by hand) is made by the one registry replica that owns the model's partition, one
    at a time. ``expires_at``: a command not started by then is refused rather than carried out behind the back
    of its asker, who stops waiting a few seconds later.
    """

    model_name: Name
    action: Literal["promote", "rollback", "approve", "reconcile"]
    version: Name | None = Field(default=None, description="The version to promote or approve.")
    actor: str = Field(description="The authenticated principal (or what noticed a hand move) that asked.")
    reason: str = Field(default="", max_length=1000)
    expires_at: AwareDatetime | None = Field(default=None, description="Refused, not started, after this.")
    signature: str = Field(
        default="",
        max_length=200,
        description="HMAC-SHA256 of the command by the registry replicas' shared secret: a command anyone else "
        "published (Kafka is open to its network) is dead-lettered, never carried out.",
    )


class RegistryAnswered(Event):
    """How a ``RegistryCommand`` ended (``registry.answers``): read by every registry replica, so the one whose
    HTTP request is waiting answers it."""

    model_name: Name
    command_id: UUID = Field(description="The command's event id.")
    status: int = Field(ge=100, le=599, description="As HTTP would say it: 200 done, 404, 409, 503 expired.")
    detail: str = Field(default="", description="Why, when it was not carried out.")
