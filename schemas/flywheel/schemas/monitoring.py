"""Drift findings and alerts."""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, BaseModel, JsonValue

from flywheel.schemas.envelope import Event, Name


class FeatureDrift(BaseModel):
    """One statistic of one feature over one window."""

    feature: str
    statistic: str
    value: float
    threshold: float
    drifted: bool


class DriftDetected(Event):
    """Data or concept drift past a threshold (``monitoring.drift``)."""

    dataset: Name
    model_name: Name
    kind: Literal["data", "concept", "performance"]
    features: list[FeatureDrift] = []
    window_start: AwareDatetime | None = None
    window_end: AwareDatetime | None = None
    window_size: int
    reference_version: str | None = None
    model_version: Name | None = None
    retrain: bool = False


class AlertRaised(Event):
    """Something an operator should know about (``alerts``)."""

    severity: Literal["info", "warning", "critical"]
    kind: str
    message: str
    dedup_key: str
    evidence: dict[str, JsonValue] = {}
    resolved: bool = False
