"""Rollout decisions: which variant answers a request, and whether a candidate steps up,
is promoted, rolled back, or ends inconclusive. Pure: figures in, a decision out.

Every decision but blue-green's rests on a difference that is significant in the sequential
test of ``sequential.py``, which stays valid however often the rollout looks at its figures.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from flywheel.common.evaluation import LOWER_IS_BETTER, p99, quality_metric
from flywheel.serving.sequential import Comparison, Sample, compare_means, compare_proportions

Action = Literal["hold", "step", "promote", "rollback", "inconclusive"]
Task = Literal["classification", "regression"]

# what a candidate must be significantly better at to be promoted is the task's quality metric
# (``flywheel.common.evaluation.quality_metric``: a classifier's share of right answers, a regressor's
# mean absolute error); the rates of failed and of slow answers hold for any model
RATES = ("error_rate", "slow_rate")


def harm(comparison: Comparison) -> float:
    """How much worse the candidate is (negative: better): less accuracy; a larger error, more failed or slow answers.

    >>> harm(compare_proportions("accuracy", 80, 100, 90, 100, 0.1, 0.05)) > 0
    True
    >>> harm(compare_means("mae", Sample(100, 800.0, 7000.0), Sample(100, 900.0, 9000.0), 0.1, 0.05)) < 0
    True
    """
    lower_is_better = comparison.metric in LOWER_IS_BETTER or comparison.metric in RATES
    return comparison.difference if lower_is_better else -comparison.difference


@dataclass
class VariantFigures:
    """Live signals of one variant during a rollout.

    A classifier's labelled answers are right or wrong (``correct``); a regressor's each have an
    absolute error, kept as their sum and sum of squares: the mean absolute error and its spread.
    """

    requests: int = 0
    errors: int = 0
    labelled: int = 0
    correct: int = 0
    timed: int = 0
    slow: int = 0
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=2000))
    task: Task = "classification"
    abs_error_sum: float = 0.0
    abs_error_sq_sum: float = 0.0

    def record_latency(self, latency_ms: float, slow_ms: float) -> None:
        """Record one answer's latency; slower than ``slow_ms`` counts as slow."""
        self.latencies_ms.append(latency_ms)
        self.timed += 1
        self.slow += latency_ms > slow_ms

    def credit(self, outcome: bool | float) -> None:
        """Count one labelled answer: a classifier's right (True) or wrong, a regressor's absolute error.

        >>> figures = VariantFigures(task="regression")
        >>> for error in (1.0, 2.0, 3.0):
        ...     figures.credit(error)
        >>> figures.mae, figures.accuracy
        (2.0, None)
        """
        self.labelled += 1
        if self.task == "regression":
            self.abs_error_sum += outcome
            self.abs_error_sq_sum += outcome**2
        else:
            self.correct += bool(outcome)

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.labelled if self.labelled and self.task == "classification" else None

    @property
    def abs_errors(self) -> Sample:
        """A regressor's absolute errors on its labelled answers."""
        return Sample(self.labelled, self.abs_error_sum, self.abs_error_sq_sum)

    @property
    def mae(self) -> float | None:
        return self.abs_errors.mean if self.labelled and self.task == "regression" else None

    @property
    def p99_ms(self) -> float:
        return p99(self.latencies_ms)

    def as_dict(self) -> dict[str, float]:
        """The figures a rollout event carries; -1 for a metric without labels (a regressor has no accuracy).

        >>> VariantFigures(labelled=4, task="regression", abs_error_sum=8.0, abs_error_sq_sum=20.0).as_dict()
        ... # doctest: +NORMALIZE_WHITESPACE
        {'requests': 0, 'errors': 0, 'error_rate': 0.0, 'labelled': 4, 'correct': 0, 'accuracy': -1.0, 'timed': 0,
         'slow': 0, 'p99_ms': 0.0, 'mae': 2.0, 'abs_error_sd': 1.1547005383792515}
        """
        figures = {
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
        if self.task == "regression":
            figures["mae"] = -1.0 if self.mae is None else self.mae
            figures["abs_error_sd"] = math.sqrt(self.abs_errors.variance)
        return figures


@dataclass(frozen=True)
class Policy:
    """When a difference between candidate and champion is real enough to act on.

    ``alpha`` is the level of the whole rollout: each of the three metrics (the quality
    metric, error rate and slow rate) is tested at ``alpha / 3`` (Bonferroni), so the chance
    that a candidate no different from the champion is ever promoted or rolled back, on any
    of them, stays below ``alpha``. ``tau`` serves both tests: a difference of rates, and of
    mean absolute errors in standard deviations of the errors (``sequential.py``).
    """

    alpha: float = 0.05
    tau: float = 0.1
    min_labels: int = 100
    min_requests: int = 100
    slow_ms: float = 100.0
    max_s: float = 3600.0

    @property
    def metric_alpha(self) -> float:
        return self.alpha / (1 + len(RATES))


def _sample_size(figures: VariantFigures, metric: str) -> int:
    if metric == "error_rate":
        return figures.requests
    if metric == "slow_rate":
        return figures.timed
    return figures.labelled


def _counts(figures: VariantFigures, metric: str) -> tuple[int, int]:
    if metric == "accuracy":
        return figures.correct, figures.labelled
    if metric == "error_rate":
        return figures.errors, figures.requests
    return figures.slow, figures.timed


def _compare(metric: str, candidate: VariantFigures, champion: VariantFigures, policy: Policy) -> Comparison:
    if metric == "mae":
        return compare_means(metric, candidate.abs_errors, champion.abs_errors, policy.tau, policy.metric_alpha)
    return compare_proportions(
        metric, *_counts(candidate, metric), *_counts(champion, metric), policy.tau, policy.metric_alpha
    )


@dataclass(frozen=True)
class Verdict:
    """The sequential tests of one look: each metric with enough sample on both sides."""

    comparisons: dict[str, Comparison]
    quality: str = "accuracy"

    def worse(self) -> list[Comparison]:
        """The metrics on which the candidate is significantly worse."""
        return [c for c in self.comparisons.values() if c.significant and harm(c) > 0]

    def better(self) -> Comparison | None:
        """The quality metric's comparison, when the candidate is significantly better on it."""
        quality = self.comparisons.get(self.quality)
        return quality if quality is not None and quality.significant and harm(quality) < 0 else None

    def why_worse(self) -> str | None:
        worse = self.worse()
        if not worse:
            return None
        return "; ".join(f"{c.describe()} is worse at level {c.alpha:.2%}" for c in worse)


def judge(candidate: VariantFigures, champion: VariantFigures, policy: Policy) -> Verdict:
    """Test each metric of the candidate against the champion's, once both have the minimum sample.

    The quality metric is the champion's task's (``quality_metric``); figures of another task
    (a classifier's against a regressor's) are not compared on it.

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
    >>> def regressor(mae, sd, n=200):
    ...     return VariantFigures(labelled=n, task="regression", abs_error_sum=n * mae,
    ...                           abs_error_sq_sum=sd**2 * (n - 1) + n * mae**2)
    >>> judge(regressor(20.0, 12.0), regressor(15.0, 10.0), policy).why_worse()
    'mae 20 vs champion 15 (p=0.0084, 200 vs 200) is worse at level 1.67%'
    >>> judge(regressor(12.3, 9.0, n=500), regressor(15.1, 10.0, n=500), policy).better().describe()
    'mae 12.3 vs champion 15.1 (p=0.0008, 500 vs 500)'
    """
    quality = quality_metric(champion.task)
    comparisons = {}
    for metric in (quality, *RATES):
        if metric == quality and candidate.task != champion.task:
            continue
        minimum = policy.min_labels if metric == quality else policy.min_requests
        if _sample_size(candidate, metric) < minimum or _sample_size(champion, metric) < minimum:
            continue
        comparisons[metric] = _compare(metric, candidate, champion, policy)
    return Verdict(comparisons, quality)


def incomparable(candidate_task: str, champion_task: str) -> str | None:
    """Why a candidate cannot be rolled out against the champion: their answers are of different kinds.

    >>> incomparable("regression", "classification")
    'the candidate is a regression model and the champion a classification one: their answers cannot be compared'
    >>> incomparable("regression", "regression") is None
    True
    """
    if candidate_task == champion_task:
        return None
    return (
        f"the candidate is a {candidate_task} model and the champion a {champion_task} one: "
        "their answers cannot be compared"
    )


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

    Significantly worse on any metric rolls back at once. Significantly better on the quality
    metric (more accurate, or a lower mean absolute error) steps a canary up once the candidate
    answered ``min_requests`` requests at the current step (and promotes it from the last step,
    or at once for A/B and shadow). Blue-green switches without evidence. A canary stepped up to
    full traffic is promoted after ``min_requests`` answers there unless it is significantly worse:
    the champion answers nothing at that step, so its figures stand still while the candidate's run
    on into other hours, and asking for "better" again would hold a good candidate forever when
    its errors grow with the season. Past ``max_s`` without a promotion, the rollout ends
    inconclusive and the champion stays.

    >>> p = Policy(min_labels=50, min_requests=10, max_s=600)
    >>> better = judge(VariantFigures(labelled=200, correct=190), VariantFigures(labelled=200, correct=150), p)
    >>> decide("canary", 0, [0.1, 0.5, 1.0], better, 10, 5.0, p).action
    'step'
    >>> decide("canary", 0, [0.1, 0.5, 1.0], better, 9, 5.0, p).action
    'hold'
    >>> decide("canary", 2, [0.1, 0.5, 1.0], better, 10, 5.0, p).action
    'promote'
    >>> [decide("canary", 2, [0.1, 0.5, 1.0], Verdict({}), n, 5.0, p).action for n in (9, 10)]
    ['hold', 'promote']
    >>> decide("canary", 0, [1.0], Verdict({}), 10, 5.0, p).action  # never stepped up on evidence
    'hold'
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
    enough = step_requests >= policy.min_requests
    held = better is not None and enough
    if held and not ramping:
        return Decision("promote", f"{strategy}: {_better(verdict)}", verdict.comparisons)
    if strategy == "canary" and step > 0 and not ramping and steps[step] >= 1.0 and enough:
        reason = f"canary: {step_requests} requests at full traffic, significantly worse on nothing"
        return Decision("promote", reason, verdict.comparisons)
    if elapsed_s >= policy.max_s:
        return Decision("inconclusive", _inconclusive(verdict, elapsed_s, step, steps), verdict.comparisons)
    if held:
        reason = f"step {step + 1} held ({step_requests} requests): {_better(verdict)}"
        return Decision("step", reason, verdict.comparisons)
    return Decision("hold", "collecting evidence")


def _better(verdict: Verdict) -> str:
    quality = verdict.comparisons[verdict.quality]
    return f"{quality.describe()} is better at level {quality.alpha:.2%}"


def _inconclusive(verdict: Verdict, elapsed_s: float, step: int, steps: list[float]) -> str:
    """Why a rollout ends at its time limit without a decision: the figures it had."""
    quality = verdict.comparisons.get(verdict.quality)
    if quality is None:
        evidence = f"too few labels to compare {verdict.quality}"
    elif verdict.better() is not None:
        evidence = f"{quality.describe()} is better, but the canary reached only step {step + 1} of {len(steps)}"
    else:
        evidence = f"{quality.describe()} is no significant difference"
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
