"""Drift statistics between a reference sample and a current window, per feature.

Numeric features: the population stability index (PSI) on the reference's
quantile bins, and the two-sample Kolmogorov-Smirnov test. Categorical features:
PSI over categories, the Jensen-Shannon distance, and the chi-squared test.
Testing many features at once at p < 0.05 raises a chance alarm in most windows,
so p-values are Bonferroni-corrected and verdicts rest on effect sizes (PSI, JS).

The reference is the same for every window until the champion changes, so what the
statistics need of it (its sorted values, its CDF, its quantile bins and their shares,
its category counts) is computed once, in a :class:`ReferenceProfile`; a window then
costs one sort and a few binary searches per feature.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import special, stats
from scipy.spatial.distance import jensenshannon

EPSILON = 1e-4
PSI_BINS = 10


def _clean(values: Sequence[float] | np.ndarray) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    return array[~np.isnan(array)]


def _psi(expected: np.ndarray, actual: np.ndarray) -> float:
    expected, actual = np.clip(expected, EPSILON, None), np.clip(actual, EPSILON, None)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


EXACT_UP_TO = 5000
"""Effective sizes up to which Smirnov's distribution is computed exactly (under a millisecond);
above, scipy's exact ``kstwo`` takes up to 70 ms per feature, and Stephens' corrected limit is
within 0.4% of it (relative, at p from 1e-4 to 0.05)."""


def _smirnov_pvalues(statistics: np.ndarray, effectives: np.ndarray) -> np.ndarray:
    """P(D >= statistic) for two-sided KS tests of effective sizes ``n·m/(n+m)``, all in one call of each of
    scipy's distributions (its per-call checks cost more than a p-value here).

    >>> statistic = float(stats.kstwo.isf(0.005, 50_000))
    >>> p_values = _smirnov_pvalues(np.array([statistic, 0.05, 0.0]), np.array([50_000, 800, np.inf]))
    >>> [round(float(p), 5) for p in p_values], bool(p_values[1] == stats.kstwo.sf(0.05, 800))
    ([0.00499, 0.03539, 1.0], True)
    """
    p_values = np.ones(len(statistics))  # an infinite size: an empty sample, nothing to test
    exact, limit = effectives <= EXACT_UP_TO, (effectives > EXACT_UP_TO) & np.isfinite(effectives)
    if exact.any():
        p_values[exact] = stats.kstwo.sf(statistics[exact], np.round(effectives[exact]))
    if limit.any():
        root = np.sqrt(effectives[limit])
        p_values[limit] = special.kolmogorov((root + 0.12 + 0.11 / root) * statistics[limit])
    return np.clip(p_values, 0.0, 1.0)


def _chi2_homogeneity_pvalue(table: np.ndarray) -> float:
    """The chi-squared test of homogeneity of a contingency table with no empty row or column, without Yates'
    correction: ``stats.chi2_contingency(table, correction=False).pvalue``, without its per-call checks.

    >>> table = np.array([[30.0, 50.0, 20.0], [25.0, 45.0, 40.0]])
    >>> bool(np.isclose(_chi2_homogeneity_pvalue(table), stats.chi2_contingency(table, correction=False).pvalue))
    True
    """
    expected = np.outer(table.sum(axis=1), table.sum(axis=0)) / table.sum()
    statistic = float(((table - expected) ** 2 / expected).sum())
    dof = (table.shape[0] - 1) * (table.shape[1] - 1)
    return float(special.chdtrc(dof, statistic))


@dataclass(frozen=True)
class NumericProfile:
    """A numeric feature's reference: sorted, its CDF at its own points, its quantile bins."""

    ordered: np.ndarray
    cdf_at_own: np.ndarray
    edges: np.ndarray
    shares: np.ndarray

    @classmethod
    def of(cls, values: Sequence[float] | np.ndarray, bins: int = PSI_BINS) -> NumericProfile:
        ordered = np.sort(_clean(values))
        n = max(len(ordered), 1)
        edges = np.unique(np.quantile(ordered, np.linspace(0, 1, bins + 1)[1:-1])) if len(ordered) else ordered
        counts = np.bincount(np.searchsorted(edges, ordered, side="right"), minlength=len(edges) + 1)
        return cls(ordered, np.searchsorted(ordered, ordered, side="right") / n, edges, counts / n)

    def psi(self, current: np.ndarray) -> float:
        """PSI of a (clean) current sample on the reference's quantile bins."""
        if len(self.ordered) == 0 or len(current) == 0:
            return 0.0
        counts = np.bincount(np.searchsorted(self.edges, current, side="right"), minlength=len(self.edges) + 1)
        return _psi(self.shares, counts / len(current))

    def ks(self, current: np.ndarray) -> tuple[float, float]:
        """The two-sample KS statistic against a (clean) current sample, and its p-value.

        The statistic is scipy's ``ks_2samp``'s (:meth:`ks_statistic`). The p-value is Smirnov's
        distribution at the effective size ``n·m/(n+m)``, as scipy's asymptotic method gives it (see
        :func:`_smirnov_pvalues`); scipy's exact method, which it uses up to 10,000 rows, differs from it
        in the third decimal.
        """
        statistic = self.ks_statistic(current)
        effective = self.effective_size(len(current))
        return statistic, float(_smirnov_pvalues(np.array([statistic]), np.array([effective]))[0])

    def ks_statistic(self, current: np.ndarray) -> float:
        """The largest gap between the two empirical CDFs at every point of either sample (right-continuous,
        so ties count once); 0 when either sample is empty."""
        n, m = len(self.ordered), len(current)
        if n == 0 or m == 0:
            return 0.0
        ordered = np.sort(current)
        at_current = (
            np.searchsorted(self.ordered, ordered, side="right") / n
            - np.searchsorted(ordered, ordered, side="right") / m
        )
        at_reference = self.cdf_at_own - np.searchsorted(ordered, self.ordered, side="right") / m
        return float(max(np.abs(at_current).max(), np.abs(at_reference).max()))

    def effective_size(self, m: int) -> float:
        """``n·m/(n+m)`` of the reference's n and a current sample's m; infinite when either is empty (a
        statistic of 0 there has p-value 1)."""
        n = len(self.ordered)
        return n * m / (n + m) if n and m else math.inf


@dataclass(frozen=True)
class CategoricalProfile:
    """A categorical feature's reference: its categories and how often each occurs."""

    categories: np.ndarray
    counts: np.ndarray

    @classmethod
    def of(cls, values: Sequence[float] | np.ndarray) -> CategoricalProfile:
        categories, counts = np.unique(_clean(values), return_counts=True)
        return cls(categories, counts)

    def table(self, current: np.ndarray) -> np.ndarray:
        """The 2 x k contingency table over the categories seen in either sample."""
        seen, counts = np.unique(current, return_counts=True)
        categories = np.union1d(self.categories, seen)
        table = np.zeros((2, len(categories)))
        table[0, np.searchsorted(categories, self.categories)] = self.counts
        table[1, np.searchsorted(categories, seen)] = counts
        return table

    def compare(self, current: np.ndarray) -> tuple[float, float, float]:
        """PSI over categories, the Jensen-Shannon distance (base 2, in [0, 1]) and the chi-squared p-value.

        The chi-squared test is one of homogeneity (a 2 x k contingency table), not goodness of fit:
        the reference is a sample too, and treating its shares as exact makes chance differences in
        many-category features (e.g. 20 car makes over 750 rows) look significant.
        """
        if len(self.categories) == 0 or len(current) == 0:
            return 0.0, 0.0, 1.0
        table = self.table(current)
        shares = table / np.maximum(table.sum(axis=1, keepdims=True), 1)
        psi = _psi(shares[0], shares[1])
        js = float(jensenshannon(shares[0], shares[1], base=2))
        p_value = 1.0 if table.shape[1] < 2 else _chi2_homogeneity_pvalue(table)
        return psi, js, p_value


def psi_numeric(reference: np.ndarray, current: np.ndarray, bins: int = PSI_BINS) -> float:
    """PSI of a numeric feature on the reference's quantile bins.

    >>> rng = np.random.default_rng(0)
    >>> same = psi_numeric(rng.normal(size=5000), rng.normal(size=1000))
    >>> shifted = psi_numeric(rng.normal(size=5000), rng.normal(1.0, size=1000))
    >>> same < 0.1 < 0.25 < shifted
    True
    """
    return NumericProfile.of(reference, bins).psi(_clean(current))


def ks_pvalue(reference: np.ndarray, current: np.ndarray) -> tuple[float, float]:
    """The KS statistic and its p-value.

    >>> rng = np.random.default_rng(0)
    >>> a, b = rng.normal(size=20000), rng.normal(0.05, size=20000)
    >>> ours, theirs = ks_pvalue(a, b), stats.ks_2samp(a, b)
    >>> bool(ours[0] == theirs.statistic and np.isclose(ours[1], theirs.pvalue, rtol=0.02))
    True
    """
    return NumericProfile.of(reference).ks(_clean(current))


def chi2_pvalue(reference: np.ndarray, current: np.ndarray) -> float:
    """p-value of a chi-squared test that both samples share one category distribution.

    >>> rng = np.random.default_rng(0)
    >>> chi2_pvalue(rng.integers(0, 20, 750), rng.integers(0, 20, 750)) > 0.01
    True
    """
    return CategoricalProfile.of(reference).compare(_clean(current))[2]


@dataclass(frozen=True)
class Thresholds:
    """When a feature's drift is worth an alert, and when it is worth retraining."""

    psi_alert: float = 0.1
    psi_retrain: float = 0.25
    js_alert: float = 0.1
    alpha: float = 0.05


@dataclass(frozen=True)
class FeatureVerdict:
    feature: str
    kind: str
    psi: float
    test_statistic: float
    p_value: float
    p_corrected: float
    js: float | None
    alert: bool
    retrain: bool


@dataclass(frozen=True)
class ReferenceProfile:
    """Every feature's reference, profiled once; :meth:`detect` compares windows with it."""

    names: tuple[str, ...]
    numeric: dict[str, NumericProfile]
    categorical: dict[str, CategoricalProfile]

    @classmethod
    def of(cls, reference: Mapping[str, np.ndarray], categorical: set[str]) -> ReferenceProfile:
        return cls(
            names=tuple(reference),
            numeric={name: NumericProfile.of(values) for name, values in reference.items() if name not in categorical},
            categorical={
                name: CategoricalProfile.of(values) for name, values in reference.items() if name in categorical
            },
        )

    def detect(self, current: Mapping[str, np.ndarray], thresholds: Thresholds = Thresholds()) -> list[FeatureVerdict]:
        """Per-feature drift verdicts of a current window, in the reference's feature order.

        A feature alerts on its effect size (PSI, or JS for categories) *and* a test
        significant after Bonferroni correction over all features, so a large window
        with a trivial shift, or many features with a chance p < 0.05, do not alarm.
        """
        features = [f for f in self.names if f in current]
        corrections = max(len(features), 1)
        values = {feature: _clean(current[feature]) for feature in features}
        numeric = [f for f in features if f not in self.categorical]
        ks = dict(zip(numeric, self._ks_tests(numeric, values), strict=True))
        verdicts = []
        for feature in features:
            if feature in self.categorical:
                psi, js, p_value = self.categorical[feature].compare(values[feature])
                statistic, effect_alert = js, psi > thresholds.psi_alert or js > thresholds.js_alert
            else:
                psi, js = self.numeric[feature].psi(values[feature]), None
                statistic, p_value = ks[feature]
                effect_alert = psi > thresholds.psi_alert
            p_corrected = min(1.0, p_value * corrections)
            significant = p_corrected < thresholds.alpha
            verdicts.append(
                FeatureVerdict(
                    feature=feature,
                    kind="categorical" if feature in self.categorical else "numeric",
                    psi=psi,
                    test_statistic=statistic,
                    p_value=p_value,
                    p_corrected=p_corrected,
                    js=js,
                    alert=effect_alert and significant,
                    retrain=psi > thresholds.psi_retrain and significant,
                )
            )
        return verdicts

    def _ks_tests(self, features: list[str], values: Mapping[str, np.ndarray]) -> list[tuple[float, float]]:
        """Each numeric feature's KS statistic and p-value, the p-values computed together."""
        profiles = [self.numeric[f] for f in features]
        statistics = np.array([p.ks_statistic(values[f]) for p, f in zip(profiles, features, strict=True)])
        effectives = np.array([p.effective_size(len(values[f])) for p, f in zip(profiles, features, strict=True)])
        p_values = _smirnov_pvalues(statistics, effectives)
        return [(float(s), float(p)) for s, p in zip(statistics, p_values, strict=True)]


def detect_drift(
    reference: Mapping[str, np.ndarray],
    current: Mapping[str, np.ndarray],
    categorical: set[str],
    thresholds: Thresholds = Thresholds(),
) -> list[FeatureVerdict]:
    """Per-feature drift verdicts of a current window against a reference not yet profiled.

    >>> rng = np.random.default_rng(1)
    >>> ref = {"a": rng.normal(size=5000), "b": rng.integers(0, 3, 5000).astype(float)}
    >>> stable = {"a": rng.normal(size=1000), "b": rng.integers(0, 3, 1000).astype(float)}
    >>> [v.alert for v in detect_drift(ref, stable, {"b"})]
    [False, False]
    >>> moved = {"a": rng.normal(2.0, size=1000), "b": rng.integers(0, 3, 1000).astype(float)}
    >>> [(v.feature, v.alert, v.retrain) for v in detect_drift(ref, moved, {"b"})]
    [('a', True, True), ('b', False, False)]
    """
    return ReferenceProfile.of(reference, categorical).detect(current, thresholds)
