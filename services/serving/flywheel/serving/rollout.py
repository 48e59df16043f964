"""Rollout decisions: which variant answers a request, and whether a candidate steps up,
is promoted, or is rolled back. Pure: figures in, a decision out.
"""

from __future__ import annotations

import hashlib
import random
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

Action = Literal["hold", "step", "promote", "rollback"]


@dataclass
class VariantFigures:
    """Live signals of one variant during a rollout."""

    requests: int = 0
    errors: int = 0
    labelled: int = 0
    correct: int = 0
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=2000))

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.labelled if self.labelled else None

    @property
    def p99_ms(self) -> float:
        if not self.latencies_ms:
            return 0.0
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]

    def as_dict(self) -> dict[str, float]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": self.error_rate,
            "labelled": self.labelled,
            "correct": self.correct,
            "accuracy": -1.0 if self.accuracy is None else self.accuracy,
            "p99_ms": self.p99_ms,
        }


@dataclass(frozen=True)
class Margins:
    """How much worse than the champion a candidate may look before it is rolled back."""

    min_requests: int = 50
    min_labels: int = 30
    accuracy: float = 0.02
    error_rate: float = 0.01
    latency_p99_ratio: float = 3.0
    latency_floor_ms: float = 100.0


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str


def worse(candidate: VariantFigures, champion: VariantFigures, margins: Margins) -> str | None:
    """Why the candidate is worse than the champion on live signals, or None.

    >>> good, bad = VariantFigures(labelled=40, correct=39), VariantFigures(labelled=40, correct=20)
    >>> worse(bad, good, Margins())
    'accuracy 50.0% vs champion 97.5% (margin 2.0%)'
    >>> worse(good, good, Margins()) is None
    True
    """
    if candidate.requests and candidate.error_rate > champion.error_rate + margins.error_rate:
        return f"error rate {candidate.error_rate:.1%} vs champion {champion.error_rate:.1%}"
    if (
        candidate.labelled >= margins.min_labels
        and champion.labelled >= margins.min_labels
        and candidate.accuracy is not None
        and champion.accuracy is not None
        and candidate.accuracy < champion.accuracy - margins.accuracy
    ):
        return f"accuracy {candidate.accuracy:.1%} vs champion {champion.accuracy:.1%} (margin {margins.accuracy:.1%})"
    if len(candidate.latencies_ms) >= margins.min_requests and len(champion.latencies_ms) >= margins.min_requests:
        slow = candidate.p99_ms > max(champion.p99_ms * margins.latency_p99_ratio, margins.latency_floor_ms)
        if slow:
            return f"latency p99 {candidate.p99_ms:.1f} ms vs champion {champion.p99_ms:.1f} ms"
    return None


def decide(
    strategy: str,
    step: int,
    steps: list[float],
    candidate: VariantFigures,
    champion: VariantFigures,
    margins: Margins,
) -> Decision:
    """What to do after new evidence: hold, step up, promote, or roll back.

    A step is judged once the candidate has answered ``min_requests`` requests in it and
    ``min_labels`` of its answers were labelled; any live signal worse beyond the margins
    rolls back at once, without waiting for the step to fill.

    >>> m = Margins(min_requests=10, min_labels=5)
    >>> ok = VariantFigures(requests=10, labelled=5, correct=5)
    >>> decide("canary", 0, [0.1, 0.5, 1.0], ok, VariantFigures(labelled=5, correct=5), m).action
    'step'
    >>> decide("canary", 2, [0.1, 0.5, 1.0], ok, VariantFigures(labelled=5, correct=5), m).action
    'promote'
    >>> bad = VariantFigures(requests=10, labelled=5, correct=1)
    >>> decide("canary", 0, [0.1, 1.0], bad, VariantFigures(labelled=5, correct=5), m)
    Decision(action='rollback', reason='accuracy 20.0% vs champion 100.0% (margin 2.0%)')
    >>> decide("blue_green", 0, [1.0], VariantFigures(), VariantFigures(), m).action
    'promote'
    """
    why = worse(candidate, champion, margins)
    if why:
        return Decision("rollback", why)
    if strategy == "blue_green":
        return Decision("promote", "blue-green: candidate warmed, all traffic switched")
    if candidate.requests < margins.min_requests or candidate.labelled < margins.min_labels:
        return Decision("hold", "collecting evidence")
    if strategy == "canary" and step + 1 < len(steps):
        return Decision("step", f"step {step + 1} held: candidate not worse than champion")
    return Decision("promote", f"{strategy}: candidate not worse than champion on live signals")


def route(strategy: str, traffic: float, entity_id: str | None, rng: random.Random) -> str:
    """Which variant answers: ``candidate`` or ``champion`` (shadow: always the champion).

    A/B is sticky per entity (hash of its id), canary is a random share of requests.

    >>> route("ab", 0.5, "entity-7", random.Random(0)) == route("ab", 0.5, "entity-7", random.Random(1))
    True
    >>> route("shadow", 1.0, None, random.Random(0))
    'champion'
    """
    if strategy == "shadow":
        return "champion"
    if strategy == "ab" and entity_id is not None:
        bucket = int(hashlib.sha256(entity_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        return "candidate" if bucket < traffic else "champion"
    return "candidate" if rng.random() < traffic else "champion"
