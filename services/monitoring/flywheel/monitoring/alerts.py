"""Alerts with a dedup key: a persisting condition is one alert, not thousands."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from flywheel.schemas import AlertRaised


@dataclass
class AlertBook:
    """Open alerts by dedup key; a key re-alerts only after it resolved or ``renotify_s`` passed.

    >>> book = AlertBook(renotify_s=3600)
    >>> first = book.raise_alert("drift:loans:age", "warning", "data_drift", "age drifted", {}, now=0)
    >>> again = book.raise_alert("drift:loans:age", "warning", "data_drift", "age drifted", {}, now=10)
    >>> (first is not None, again is None)
    (True, True)
    >>> book.resolve("drift:loans:age", now=20).resolved
    True
    >>> book.raise_alert("drift:loans:age", "warning", "data_drift", "age drifted", {}, now=30) is not None
    True
    """

    renotify_s: float = 3600.0
    producer: str = "monitoring"
    open: dict[str, tuple[float, AlertRaised]] = field(default_factory=dict)
    history: list[AlertRaised] = field(default_factory=list)

    def raise_alert(
        self,
        key: str,
        severity: str,
        kind: str,
        message: str,
        evidence: dict[str, Any],
        now: float | None = None,
        **envelope: Any,
    ) -> AlertRaised | None:
        now = time.time() if now is None else now
        if key in self.open and now - self.open[key][0] < self.renotify_s:
            return None
        alert = AlertRaised(
            producer=self.producer,
            severity=severity,
            kind=kind,
            message=message,
            dedup_key=key,
            evidence=evidence,
            **envelope,
        )
        self.open[key] = (now, alert)
        self._remember(alert)
        return alert

    def resolve(self, key: str, now: float | None = None) -> AlertRaised | None:
        """Close an open alert; returns the resolution event, or None when nothing was open."""
        if key not in self.open:
            return None
        _, alert = self.open.pop(key)
        resolution = alert.model_copy(update={"resolved": True, "message": f"resolved: {alert.message}"})
        resolution = AlertRaised.model_validate(
            {**resolution.model_dump(exclude={"event_id", "occurred_at"}), **alert.caused()}
        )
        self._remember(resolution)
        return resolution

    def _remember(self, alert: AlertRaised) -> None:
        self.history.append(alert)
        del self.history[:-1000]
