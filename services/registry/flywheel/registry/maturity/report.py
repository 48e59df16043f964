"""The maturity report: criteria judged into met or not, levels per area and overall, what the next level lacks.

Levels: 0 manual; 1 ML pipeline; 2 CI/CD for ML; 3 full automation. Each criterion belongs to one
area and one level, and is judged from ``Evidence`` (plain data the edge gathered from MinIO, MLflow
and Kafka) into met or not met, with a sentence naming the ids and times it rests on. An area's
level is the highest L whose criteria, and every criterion below it, are met; the deployment's
level is its lowest area's. A criterion that needs something to have happened (a drift, a rollback)
is not met until it has: the model credits what the system did, not what it could do.

>>> tracked = Criterion("tracked", "model_development", 1, "experiment tracking",
...     lambda e: Finding(bool(e.versions), "runs in MLflow" if e.versions else "no run"))
>>> report = judge([tracked], Evidence())
>>> report.level, [(a.area, a.level) for a in report.areas], report.missing
(0, [('model_development', 0)], ['Model development: experiment tracking'])
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import BaseModel, Field

from flywheel.registry.maturity.evidence import Evidence

LEVELS = {0: "manual", 1: "ML pipeline", 2: "CI/CD for ML", 3: "full automation"}
AREAS = {
    "data_management": "Data management",
    "model_development": "Model development",
    "deployment": "Deployment",
    "monitoring": "Monitoring",
    "continuous_training": "Continuous training",
}


# -- the report ------------------------------------------------------------------------------------


class Judged(BaseModel):
    """One criterion, met or not, with the evidence from the running system."""

    key: str
    title: str
    level: int = Field(ge=1, le=3)
    met: bool
    evidence: str


class AreaReport(BaseModel):
    """One area: the level it meets, its criteria, and what its next level lacks."""

    area: str
    title: str
    level: int = Field(ge=0, le=3)
    criteria: list[Judged]
    missing: list[str] = Field(description="Titles of the unmet criteria of the area's next level.")


class MaturityReport(BaseModel):
    """The level this deployment (or one model) meets, area by area, criterion by criterion."""

    model: str | None = Field(default=None, description="The model judged; None: the whole deployment.")
    since: datetime | None = Field(default=None, description="Only evidence from this time on; None: all of it.")
    level: int = Field(ge=0, le=3, description="The lowest area's level.")
    level_name: str
    next_level: int | None = Field(description="None at level 3.")
    missing: list[str] = Field(description="The unmet criteria of the next level, as 'area: title'.")
    areas: list[AreaReport]


# -- judging ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    met: bool
    evidence: str


@dataclass(frozen=True)
class Criterion:
    key: str
    area: str
    level: int
    title: str
    judge: Callable[[Evidence], Finding]


def area_level(judged: Iterable[Judged]) -> int:
    """The highest level whose criteria, and all below it, are met.

    >>> area_level([Judged(key="a", title="a", level=1, met=True, evidence=""),
    ...             Judged(key="b", title="b", level=2, met=False, evidence=""),
    ...             Judged(key="c", title="c", level=3, met=True, evidence="")])
    1
    """
    judged = list(judged)
    level = 0
    for candidate in (1, 2, 3):
        if not all(j.met for j in judged if j.level <= candidate):
            break
        level = candidate
    return level


def judge(
    criteria: Iterable[Criterion], evidence: Evidence, model: str | None = None, since: datetime | None = None
) -> MaturityReport:
    """Judge every criterion on ``evidence`` (scoped to ``model`` and to ``since`` when given)."""
    criteria = list(criteria)
    scoped = evidence.of_model(model) if model else evidence
    scoped = scoped.since(since) if since else scoped
    areas = []
    for area, title in AREAS.items():
        judged = [_judged(c, scoped) for c in criteria if c.area == area]
        if not judged:  # an area without criteria is not judged (it would meet every level vacuously)
            continue
        level = area_level(judged)
        missing = [j.title for j in judged if j.level == level + 1 and not j.met]
        areas.append(AreaReport(area=area, title=title, level=level, criteria=judged, missing=missing))
    level = min(a.level for a in areas)
    next_level = level + 1 if level < 3 else None
    missing = [
        f"{a.title}: {j.title}" for a in areas for j in a.criteria if next_level and j.level <= next_level and not j.met
    ]
    return MaturityReport(
        model=model,
        since=since,
        level=level,
        level_name=LEVELS[level],
        next_level=next_level,
        missing=missing,
        areas=areas,
    )


def _judged(criterion: Criterion, evidence: Evidence) -> Judged:
    found = criterion.judge(evidence)
    return Judged(
        key=criterion.key, title=criterion.title, level=criterion.level, met=found.met, evidence=found.evidence
    )


def when(at: datetime | None) -> str:
    """A time as the evidence sentences show it.

    >>> when(datetime(2026, 12, 2, 12, 8, 59, 120000, tzinfo=UTC))
    '2026-12-02 12:08:59 UTC'
    """
    return "an unknown time" if at is None else at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
