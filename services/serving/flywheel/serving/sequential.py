"""A sequential test of two proportions that stays valid however often it is looked at.

A rollout looks at its figures after every label and every answer. A fixed-sample test
(a z-test at 5%) checked that often rejects a true "no difference" far more than 5% of the
time: sooner or later the noise crosses the line. The mixture sequential probability ratio
test (mSPRT; Robbins 1970, Johari et al. 2017 "Always valid inference") does not: under the
null hypothesis its likelihood ratio is a martingale, so by Ville's inequality the chance that
it *ever* reaches ``1 / alpha`` is at most ``alpha``. A rollout may therefore act the moment
the ratio crosses, and stop whenever it likes.

For the difference ``theta`` of two proportions, estimated by ``d`` with variance ``V``
(normal approximation), and a normal mixture ``theta ~ N(0, tau**2)`` over the alternatives::

    Lambda = sqrt(V / (V + tau**2)) * exp(tau**2 * d**2 / (2 * V * (V + tau**2)))

``tau`` is the size of difference the test is tuned to find fastest: differences much
smaller or much larger take more samples. Pure functions, no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def log_likelihood_ratio(difference: float, variance: float, tau: float) -> float:
    """The mSPRT's log mixture likelihood ratio for an estimated ``difference`` with ``variance``.

    Logs, because the ratio itself overflows a float once the evidence is overwhelming.

    Parameters
    ----------
    difference
        The estimated difference of the two proportions (candidate minus champion).
    variance
        The variance of that estimate; a non-positive variance carries no evidence (0).
    tau
        Standard deviation of the normal mixture over the alternatives.

    >>> round(log_likelihood_ratio(0.0, 0.001, 0.05), 3)  # no difference: evidence for the null
    -0.626
    >>> round(log_likelihood_ratio(0.1, 0.001, 0.05), 3)  # ten points with a 3-point standard error
    2.945
    >>> log_likelihood_ratio(0.1, 0.0, 0.05)
    0.0
    """
    if variance <= 0 or tau <= 0:
        return 0.0
    spread = variance + tau**2
    return 0.5 * math.log(variance / spread) + tau**2 * difference**2 / (2 * variance * spread)


@dataclass(frozen=True)
class Comparison:
    """Candidate against champion on one rate, at one look of the sequential test."""

    metric: str
    candidate: float
    champion: float
    candidate_n: int
    champion_n: int
    std_error: float
    log_likelihood_ratio: float
    alpha: float

    @property
    def difference(self) -> float:
        """Candidate minus champion."""
        return self.candidate - self.champion

    @property
    def p_value(self) -> float:
        """``1 / Lambda`` at this look; the always-valid p-value is the smallest of these so far."""
        return math.exp(-self.log_likelihood_ratio) if self.log_likelihood_ratio > 0 else 1.0

    @property
    def significant(self) -> bool:
        """The ratio reached ``1 / alpha``: the difference is real at level ``alpha``."""
        return self.log_likelihood_ratio >= math.log(1 / self.alpha)

    def describe(self) -> str:
        """One line for a reason or a log: both rates, the p-value and the samples.

        >>> compare_proportions("accuracy", 90, 100, 160, 200, tau=0.05, alpha=0.05).describe()
        'accuracy 90.0% vs champion 80.0% (p=0.4074, 100 vs 200)'
        """
        return (
            f"{self.metric.replace('_', ' ')} {self.candidate:.1%} vs champion {self.champion:.1%} "
            f"(p={self.p_value:.4f}, {self.candidate_n} vs {self.champion_n})"
        )


def compare_proportions(
    metric: str,
    candidate_hits: int,
    candidate_n: int,
    champion_hits: int,
    champion_n: int,
    tau: float,
    alpha: float,
) -> Comparison:
    """Test whether the candidate's rate of ``metric`` differs from the champion's.

    The variance is the pooled one of the null hypothesis (both rates equal), with one
    pseudo-success and one pseudo-failure so that small all-or-nothing samples (10 of 10
    against 9 of 10) do not look infinitely certain.

    Parameters
    ----------
    metric
        The rate's name (``accuracy``, ``error_rate``, ``slow_rate``).
    candidate_hits, candidate_n, champion_hits, champion_n
        Successes and trials of each variant.
    tau
        The mixture's standard deviation: the difference the test finds fastest.
    alpha
        The level at which a difference is called significant.

    >>> same = compare_proportions("accuracy", 160, 200, 800, 1000, tau=0.05, alpha=0.05)
    >>> (same.significant, same.p_value)
    (False, 1.0)
    >>> better = compare_proportions("accuracy", 190, 200, 800, 1000, tau=0.05, alpha=0.05)
    >>> (better.significant, round(better.difference, 2), better.p_value < 0.001)
    (True, 0.15, True)
    """
    pooled = (candidate_hits + champion_hits + 1) / (candidate_n + champion_n + 2)
    variance = pooled * (1 - pooled) * (1 / max(candidate_n, 1) + 1 / max(champion_n, 1))
    candidate = candidate_hits / candidate_n if candidate_n else 0.0
    champion = champion_hits / champion_n if champion_n else 0.0
    return Comparison(
        metric=metric,
        candidate=candidate,
        champion=champion,
        candidate_n=candidate_n,
        champion_n=champion_n,
        std_error=math.sqrt(variance),
        log_likelihood_ratio=log_likelihood_ratio(candidate - champion, variance, tau),
        alpha=alpha,
    )
