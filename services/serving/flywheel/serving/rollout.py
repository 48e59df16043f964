"""Rollout decisions: which variant answers a request, and whether a candidate steps up,
is promoted, rolled back, or ends inconclusive. Pure: figures in, a decision out.

Every decision but blue-green's rests on a difference that is significant in the sequential
test of ``sequential.py``, which stays valid however often the rollout looks at its figures.
"""

from __future__ import annotations

import hashlib
import random
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from flywheel.serving.sequential import Comparison, compare_proportions

Action = Literal["hold", "step", "promote", "rollback", "inconclusive"]


@dataclass
class VariantFigures:
    """Live signals of one variant during a rollout."""

    requests: int = 0
    errors: int = 0
    labelled: int = 0
    correct: int = 0
    timed: int = 0
    slow: int = 0
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=2000))

    def record_latency(self, latency_ms: float, slow_ms: float) -> None:
        """Record one answer's latency; slower than ``slow_ms`` counts as slow."""
        self.latencies_ms.append(latency_ms)
        self.timed += 1
        self.slow += latency_ms > slow_ms

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
            "timed": self.timed,
            "slow": self.slow,
            "p99_ms": self.p99_ms,
        }


@dataclass(frozen=True)
class Policy:
    """When a difference between candidate and champion is real enough to act on.

    ``alpha`` is the level of the whole rollout: each of the three rates is tested at
    ``alpha / 3`` (Bonferroni), so the chance that a candidate no different from the
    champion is ever promoted or rolled back, on any rate, stays below ``alpha``.
    """

    alpha: float = 0.05
    tau: float = 0.1
    min_labels: int = 100
    min_requests: int = 100
    slow_ms: float = 100.0
    max_s: float = 3600.0

    @property
    def metric_alpha(self) -> float:
        return self.alpha / len(METRICS)


# the rates compared, each a proportion: of labelled answers right, of answers failed, of answers slow
METRICS = ("accuracy", "error_rate", "slow_rate")


def _counts(figures: VariantFigures, metric: str) -> tuple[int, int]:
    if metric == "accuracy":
        return figures.correct, figures.labelled
    if metric == "error_rate":
        return figures.errors, figures.requests
    return figures.slow, figures.timed


@dataclass(frozen=True)
class Verdict:
    """The sequential tests of one look: each rate with enough sample on both sides."""

    comparisons: dict[str, Comparison]

    def worse(self) -> list[Comparison]:
        """The rates on which the candidate is significantly worse."""
        return [c for c in self.comparisons.values() if c.significant and _harm(c) > 0]

    def better(self) -> Comparison | None:
        """The accuracy comparison, when the candidate is significantly more accurate."""
        accuracy = self.comparisons.get("accuracy")
        return accuracy if accuracy is not None and accuracy.significant and _harm(accuracy) < 0 else None

    def why_worse(self) -> str | None:
        worse = self.worse()
        if not worse:
            return None
        return "; ".join(f"{c.describe()} is worse at level {c.alpha:.2%}" for c in worse)


def _harm(comparison: Comparison) -> float:
    """How much worse the candidate is (negative: better): less accuracy, more errors or slow answers."""
    return -comparison.difference if comparison.metric == "accuracy" else comparison.difference


def judge(candidate: VariantFigures, champion: VariantFigures, policy: Policy) -> Verdict:
    """Test each rate of the candidate against the champion's, once both have the minimum sample.

    >>> policy = Policy(min_labels=50)
    >>> good, bad = VariantFigures(labelled=200, correct=190), VariantFigures(labelled=200, correct=100)
    >>> judge(bad, good, policy).why_worse()
    'accuracy 50.0% vs champion 95.0% (p=0.0000, 200 vs 200) is worse at level 1.67%'
    >>> judge(good, good, policy).why_worse() is None
    True
    >>> judge(good, bad, policy).better().describe()
    'accuracy 95.0% vs champion 50.0% (p=0.0000, 200 vs 200)'
    >>> judge(VariantFigures(labelled=10, correct=10), bad, policy).comparisons
    {}
    """
    comparisons = {}
    for metric in METRICS:
        minimum = policy.min_labels if metric == "accuracy" else policy.min_requests
        candidate_hits, candidate_n = _counts(candidate, metric)
        champion_hits, champion_n = _counts(champion, metric)
        if candidate_n < minimum or champion_n < minimum:
            continue
        comparisons[metric] = compare_proportions(
            metric, candidate_hits, candidate_n, champion_hits, champion_n, policy.tau, policy.metric_alpha
        )
    return Verdict(comparisons)


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str
    comparisons: dict[str, Comparison] = field(default_factory=dict)


def decide(
    strategy: str,
    step: int,
    steps: list[float],
    verdict: Verdict,
    step_requests: int,
    elapsed_s: float,
    policy: Policy,
) -> Decision:
    """What to do after new evidence: hold, step up, promote, roll back, or end inconclusive.

    Significantly worse on any rate rolls back at once. Significantly more accurate steps a
    canary up once the candidate answered ``min_requests`` requests at the current step
    (and promotes it from the last step, or at once for A/B and shadow). Blue-green switches
    without evidence. Past ``max_s`` without a promotion, the rollout ends inconclusive and
    the champion stays.

    >>> p = Policy(min_labels=50, min_requests=10, max_s=600)
    >>> better = judge(VariantFigures(labelled=200, correct=190), VariantFigures(labelled=200, correct=150), p)
    >>> decide("canary", 0, [0.1, 0.5, 1.0], better, 10, 5.0, p).action
    'step'
    >>> decide("canary", 0, [0.1, 0.5, 1.0], better, 9, 5.0, p).action
    'hold'
    >>> decide("canary", 2, [0.1, 0.5, 1.0], better, 10, 5.0, p).action
    'promote'
    >>> worse = judge(VariantFigures(labelled=200, correct=150), VariantFigures(labelled=200, correct=190), p)
    >>> decide("canary", 0, [0.1, 1.0], worse, 0, 5.0, p).action
    'rollback'
    >>> same = judge(VariantFigures(labelled=200, correct=170), VariantFigures(labelled=200, correct=171), p)
    >>> [decide("ab", 0, [0.5], same, 200, t, p).action for t in (5.0, 600.0)]
    ['hold', 'inconclusive']
    >>> decide("blue_green", 0, [1.0], Verdict({}), 0, 0.0, p).action
    'promote'
    """
    why = verdict.why_worse()
    if why:
        return Decision("rollback", why, verdict.comparisons)
    if strategy == "blue_green":
        return Decision("promote", "blue-green: candidate warmed, all traffic switched", verdict.comparisons)
    better = verdict.better()
    ramping = strategy == "canary" and step + 1 < len(steps)
    held = better is not None and step_requests >= policy.min_requests
    if held and not ramping:
        return Decision("promote", f"{strategy}: {_better(verdict)}", verdict.comparisons)
    if elapsed_s >= policy.max_s:
        return Decision("inconclusive", _inconclusive(verdict, elapsed_s, step, steps), verdict.comparisons)
    if held:
        reason = f"step {step + 1} held ({step_requests} requests): {_better(verdict)}"
        return Decision("step", reason, verdict.comparisons)
    return Decision("hold", "collecting evidence")


def _better(verdict: Verdict) -> str:
    accuracy = verdict.comparisons["accuracy"]
    return f"{accuracy.describe()} is better at level {accuracy.alpha:.2%}"


def _inconclusive(verdict: Verdict, elapsed_s: float, step: int, steps: list[float]) -> str:
    """Why a rollout ends at its time limit without a decision: the figures it had."""
    accuracy = verdict.comparisons.get("accuracy")
    if accuracy is None:
        evidence = "too few labels to compare accuracy"
    elif verdict.better() is not None:
        evidence = f"{accuracy.describe()} is better, but the canary reached only step {step + 1} of {len(steps)}"
    else:
        evidence = f"{accuracy.describe()} is no significant difference"
    return f"no decision in {elapsed_s:.0f} s ({evidence}); the champion stays"


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
