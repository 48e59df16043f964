"""Alerts with a dedup key and hysteresis: a persisting condition is one alert, a noisy one does not flap.

A figure that wanders around one threshold would raise and resolve an alert on every check.
So each alert has two thresholds (``Band``): it raises past ``raise_at`` and resolves only
once the figure is back past ``resolve_at``, on the safe side of it; and either change must
hold for ``hold_s`` seconds (every check in between agreeing) before it is announced. Every
message carries the figure of the moment it is sent, resolutions included.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from flywheel.schemas import AlertRaised


@dataclass(frozen=True)
class Band:
    """The two thresholds of one alert: raise past ``raise_at``, resolve back past ``resolve_at``.

    ``above``: the figure alerts when high (latency, missing values) or, if False, when low (accuracy).

    >>> accuracy = Band(raise_at=0.85, resolve_at=0.87, above=False)
    >>> accuracy.breached(0.84), accuracy.breached(0.86), accuracy.cleared(0.86), accuracy.cleared(0.88)
    (True, False, False, True)
    >>> Band(raise_at=500, resolve_at=600)
    Traceback (most recent call last):
    ...
    ValueError: resolve_at 600 must be on the safe side of raise_at 500 (below it)
    """

    raise_at: float
    resolve_at: float
    above: bool = True

    def __post_init__(self) -> None:
        safe = self.resolve_at <= self.raise_at if self.above else self.resolve_at >= self.raise_at
        if not safe:
            side = "below" if self.above else "above"
            raise ValueError(
                f"resolve_at {self.resolve_at} must be on the safe side of raise_at {self.raise_at} ({side} it)"
            )

    def breached(self, value: float) -> bool:
        return value > self.raise_at if self.above else value < self.raise_at

    def cleared(self, value: float) -> bool:
        return value < self.resolve_at if self.above else value > self.resolve_at


@dataclass
class AlertBook:
    """Open alerts by dedup key; a key re-alerts only after it resolved or ``renotify_s`` passed.

    ``observe`` adds the hysteresis: a change of state is announced once it held ``hold_s``.

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
    hold_s: float = 0.0
    open: dict[str, tuple[float, AlertRaised]] = field(default_factory=dict)
    history: list[AlertRaised] = field(default_factory=list)
    pending: dict[str, float] = field(default_factory=dict)  # key -> since when its state wants to change

    def observe(
        self,
        key: str,
        breached: bool,
        cleared: bool,
        severity: str,
        kind: str,
        message: str,
        evidence: dict[str, Any],
        now: float | None = None,
        **envelope: Any,
    ) -> AlertRaised | None:
        """One check of an alert's condition: raise or resolve once the change held ``hold_s``.

        ``breached``: the figure is past the raise threshold; ``cleared``: back past the resolve
        one. ``message`` and ``evidence`` describe the figure now; an open alert keeps them current.

        >>> book, band = AlertBook(hold_s=30), Band(raise_at=0.85, resolve_at=0.87, above=False)
        >>> def check(value, now):
        ...     alert = book.observe("accuracy:m", band.breached(value), band.cleared(value), "critical",
        ...                          "accuracy", f"accuracy {value:.0%}", {"accuracy": value}, now=now)
        ...     return alert and (alert.resolved, alert.message)
        >>> check(0.84, 0), check(0.86, 10), check(0.84, 20), check(0.83, 49), check(0.80, 50)
        (None, None, None, None, (False, 'accuracy 80%'))
        >>> check(0.90, 60), check(0.86, 70), check(0.90, 80), check(0.91, 110)
        (None, None, None, (True, 'resolved: accuracy 91%'))
        """
        now = time.time() if now is None else now
        is_open = key in self.open
        if not (cleared if is_open else breached):
            self.pending.pop(key, None)  # the change did not hold: its clock starts again
            if is_open:
                self._refresh(key, message, evidence)
                return self.raise_alert(key, severity, kind, message, evidence, now, **envelope)  # renotify
            return None
        since = self.pending.setdefault(key, now)
        if now - since < self.hold_s:
            if is_open:
                self._refresh(key, message, evidence)
            return None
        self.pending.pop(key, None)
        if is_open:
            return self.resolve(key, now, message=message, evidence=evidence)
        return self.raise_alert(key, severity, kind, message, evidence, now, **envelope)

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

    def resolve(
        self, key: str, now: float | None = None, message: str | None = None, evidence: dict[str, Any] | None = None
    ) -> AlertRaised | None:
        """Close an open alert; returns the resolution event (with the figure now, if given), or None."""
        if key not in self.open:
            return None
        _, alert = self.open.pop(key)
        self.pending.pop(key, None)
        update = {"resolved": True, "message": f"resolved: {message or alert.message}"}
        if evidence is not None:
            update["evidence"] = evidence
        resolution = alert.model_copy(update=update)
        resolution = AlertRaised.model_validate(
            {**resolution.model_dump(exclude={"event_id", "occurred_at"}), **alert.caused()}
        )
        self._remember(resolution)
        return resolution

    def _refresh(self, key: str, message: str, evidence: dict[str, Any]) -> None:
        """Keep an open alert's message and evidence at the current figure (what ``/alerts`` shows)."""
        raised_at, alert = self.open[key]
        self.open[key] = (raised_at, alert.model_copy(update={"message": message, "evidence": evidence}))

    def _remember(self, alert: AlertRaised) -> None:
        self.history.append(alert)
        del self.history[:-1000]
