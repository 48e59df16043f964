"""Sequential tests of two proportions, and of two means, that stay valid however often they are looked at.

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
smaller or much larger take more samples.

For the difference of two means (a regressor's mean absolute errors), ``d`` is the difference
of the sample means and ``V = s1**2 / n1 + s2**2 / n2`` its unpooled variance (a better model's
errors are usually less spread, too), with the same ``Lambda``, but with ``tau`` multiplied by
the pooled standard deviation ``s`` of the two samples. ``Lambda`` depends on ``d``, ``V`` and
``tau`` only through ``d / s``, ``V / s**2`` and ``tau / s``, so this is the same test of the
standardised difference (an effect size), and ``tau`` is in standard deviations: one ``tau``
serves both tests (0.1 is ten points of accuracy, or a tenth of the errors' spread). The
variances are estimated, so the guarantee holds once each side has a fair sample (a rollout's
``min_labels``); ``tests/unit/test_serving_regression.py`` checks it by A/A simulation.

Pure functions, no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal


def log_likelihood_ratio(difference: float, variance: float, tau: float) -> float:
    """The mSPRT's log mixture likelihood ratio for an estimated ``difference`` with ``variance``.

    Logs, because the ratio itself overflows a float once the evidence is overwhelming.

    Parameters
    ----------
    difference
        The estimated difference of the two proportions or means (candidate minus champion).
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
    """Candidate against champion on one rate or mean, at one look of the sequential test."""

    metric: str
    candidate: float
    champion: float
    candidate_n: int
    champion_n: int
    std_error: float
    log_likelihood_ratio: float
    alpha: float
    kind: Literal["proportion", "mean"] = "proportion"

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
        """One line for a reason or a log: both rates (or means), the p-value and the samples.

        >>> compare_proportions("accuracy", 90, 100, 160, 200, tau=0.05, alpha=0.05).describe()
        'accuracy 90.0% vs champion 80.0% (p=0.4074, 100 vs 200)'
        >>> compare_means("mae", Sample(200, 2460, 40_000), Sample(200, 3020, 60_000), tau=0.1, alpha=0.05).describe()
        'mae 12.3 vs champion 15.1 (p=0.0559, 200 vs 200)'
        """
        return (
            f"{self.metric.replace('_', ' ')} {self._shown(self.candidate)} vs champion {self._shown(self.champion)} "
            f"(p={self.p_value:.4f}, {self.candidate_n} vs {self.champion_n})"
        )

    def _shown(self, value: float) -> str:
        """A rate as a percentage; a mean (in the label's units) with three significant digits, or whole."""
        if self.kind == "proportion":
            return f"{value:.1%}"
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"


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


@dataclass(frozen=True)
class Sample:
    """A sample summarised by its size, sum and sum of squares: enough for its mean and variance."""

    n: int
    total: float = 0.0
    total_of_squares: float = 0.0

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n else 0.0

    @property
    def variance(self) -> float:
        """The unbiased sample variance; 0 below two values, and never negative from rounding.

        >>> Sample(4, 10.0, 30.0).variance  # 1, 2, 3, 4
        1.6666666666666667
        """
        if self.n < 2:
            return 0.0
        return max(0.0, (self.total_of_squares - self.total**2 / self.n) / (self.n - 1))


def compare_means(metric: str, candidate: Sample, champion: Sample, tau: float, alpha: float) -> Comparison:
    """Test whether the candidate's mean of ``metric`` differs from the champion's.

    The variance of the difference is the unpooled one, ``s1**2 / n1 + s2**2 / n2``; ``tau``
    is scaled by the pooled standard deviation of both samples (see the module's docstring).
    Samples without any spread carry no evidence.

    Parameters
    ----------
    metric
        The mean's name (``mae``: the mean absolute error of a regressor's labelled answers).
    candidate, champion
        Each variant's values, summarised.
    tau
        The mixture's standard deviation, in standard deviations of the values: the effect size
        the test finds fastest.
    alpha
        The level at which a difference is called significant.

    >>> spread = 10.0**2 * 199 + 200 * 15.0**2  # 200 errors, mean 15, standard deviation 10
    >>> same = compare_means("mae", Sample(200, 3000, spread), Sample(200, 3000, spread), tau=0.1, alpha=0.05)
    >>> (same.significant, same.p_value)
    (False, 1.0)
    >>> lower = compare_means("mae", Sample(200, 1600, 10.0**2 * 199 + 200 * 8.0**2),
    ...                       Sample(200, 3000, spread), tau=0.1, alpha=0.05)
    >>> (lower.significant, lower.difference, lower.p_value < 0.001)
    (True, -7.0, True)
    """
    variance = candidate.variance / max(candidate.n, 1) + champion.variance / max(champion.n, 1)
    pooled_df = candidate.n + champion.n - 2
    pooled_variance = (
        ((candidate.n - 1) * candidate.variance + (champion.n - 1) * champion.variance) / pooled_df
        if pooled_df > 0
        else 0.0
    )
    difference = candidate.mean - champion.mean
    return Comparison(
        metric=metric,
        candidate=candidate.mean,
        champion=champion.mean,
        candidate_n=candidate.n,
        champion_n=champion.n,
        std_error=math.sqrt(variance),
        log_likelihood_ratio=log_likelihood_ratio(difference, variance, tau * math.sqrt(pooled_variance)),
        alpha=alpha,
        kind="mean",
    )
