"""Quality gates: pure decisions over the figures of a candidate, its champion and a trivial baseline.

A candidate is judged on its out-of-time slice (``recent``: the latest part of its window,
which neither it nor, being older, the champion trained on) and, on a drift retrain, on the
slice from before the drift (``before``). The default gate, with no thresholds set: beat
the trivial baseline (always the majority class; for a regressor, the mean) by a margin on
``recent``, be no worse than the champion there, and not much worse than it on ``before``.
Thresholds, the primary metric and the margins come from the model spec's ``gates:`` over the
registry's settings.

Margins on an error in the label's units (``rmse``, ``mae``) are fractions of the figure they
move (``baseline_margin`` 0.01: 1% lower than the mean's; ``before_tolerance`` 0.10: at most
10% higher than the champion's): the same absolute margin would be nothing on house prices and
everything on probabilities. Every other metric, ``r2`` among them, moves by absolute margins.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from flywheel.common import evaluation
from flywheel.common.evaluation import IN_LABEL_UNITS, LOWER_IS_BETTER, REGRESSION_METRICS
from flywheel.common.modelspec import GateSpec
from flywheel.schemas import GateResult

RECENT, BEFORE, EVAL = "recent", "before", "eval"  # EVAL: an older run's random split, its only slice


@dataclass(frozen=True)
class SliceFigures:
    """One evaluation slice: the candidate's, the champion's and the trivial baseline's metrics on it.

    ``champion`` is None when there is no champion, or it could not be scored (``problem`` says why).
    """

    name: str
    rows: int
    candidate: Mapping[str, float]
    baseline: Mapping[str, float] = field(default_factory=dict)
    champion: Mapping[str, float] | None = None
    problem: str | None = None

    def where(self) -> str:
        return f"on {self.name} ({self.rows} rows)"

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "candidate": dict(self.candidate),
            "baseline": dict(self.baseline),
            "champion": dict(self.champion) if self.champion is not None else None,
            "problem": self.problem,
        }


def resolve(spec: GateSpec, defaults: GateSpec) -> GateSpec:
    """The model's gates: each field the spec sets, else the registry's default.

    >>> spec = resolve(GateSpec(baseline_margin=0.05), GateSpec(primary_metric="accuracy", baseline_margin=0.01))
    >>> spec.primary_metric, spec.baseline_margin
    ('accuracy', 0.05)
    """
    chosen = spec.model_dump(exclude_none=True)
    return defaults.model_copy(update=chosen)


def _known(value: float | None) -> bool:
    return value is not None and not math.isnan(value)


def target(metric: str, reference: float, margin: float) -> float:
    """The figure a value must reach: ``margin`` better than ``reference`` (lower for log loss and errors);
    for an error in the label's units, ``margin`` is a fraction of ``reference`` (negative: a tolerance).

    >>> target("accuracy", 0.8, 0.01), target("log_loss", 0.5, 0.01)
    (0.81, 0.49)
    >>> target("rmse", 20.0, 0.01), target("rmse", 20.0, -0.10), target("r2", 0.5, 0.01)
    (19.8, 22.0, 0.51)
    """
    if metric in IN_LABEL_UNITS:
        return reference * (1 - margin)
    return reference - margin if metric in LOWER_IS_BETTER else reference + margin


def amount(metric: str, margin: float, signed: bool = False) -> str:
    """A margin as a message says it: ``0.01``, or ``1%`` (of the reference) for an error in the label's units.

    >>> amount("accuracy", 0.01, signed=True), amount("rmse", 0.01, signed=True), amount("rmse", 0.0, signed=True)
    ('+0.01', '-1%', '+0%')
    """
    if metric in IN_LABEL_UNITS:  # a margin better is that fraction lower
        return f"{-100 * margin + 0.0:+.3g}%" if signed else f"{100 * margin:.3g}%"  # + 0.0: no "-0%"
    return f"{margin:+.4g}" if signed else f"{margin:.4g}"


def reaches(metric: str, value: float, goal: float) -> bool:
    """Whether ``value`` is at least as good as ``goal``."""
    return value <= goal if metric in LOWER_IS_BETTER else value >= goal


def relation(metric: str, passed: bool) -> str:
    """How a value stood to its goal, in the metric's direction: ``>=``/``<``, or ``<=``/``>`` for losses."""
    if metric in LOWER_IS_BETTER:
        return "<=" if passed else ">"
    return ">=" if passed else "<"


def _compare(
    gate: str, metric: str, value: float | None, reference: float | None, margin: float, what: str, at: SliceFigures
) -> GateResult:
    """``value`` against ``reference`` moved by ``margin``; ``what`` names the reference in the message."""
    if not _known(value) or not _known(reference):
        return GateResult(
            gate=gate,
            passed=False,
            metric=metric,
            value=value if _known(value) else None,
            reference=reference if _known(reference) else None,
            slice=at.name,
            message=f"{metric} could not be compared {at.where()}: candidate {value}, {what} {reference}"
            + (f" ({at.problem})" if at.problem else ""),
        )
    goal = target(metric, reference, margin)
    passed = reaches(metric, value, goal)
    return GateResult(
        gate=gate,
        passed=passed,
        metric=metric,
        value=value,
        threshold=goal,
        reference=reference,
        slice=at.name,
        message=(
            f"{metric} {value:.4f} {relation(metric, passed)} {goal:.4f} = {what} {reference:.4f} "
            f"{amount(metric, margin, signed=True)} {at.where()}"
        ),
    )


def threshold_gates(at: SliceFigures, thresholds: Mapping[str, float]) -> list[GateResult]:
    """One gate per configured threshold: the candidate's metric must reach it.

    >>> recent = SliceFigures("recent", 400, {"accuracy": 0.9, "f1": 0.7, "log_loss": 0.3})
    >>> [g.passed for g in threshold_gates(recent, {"accuracy": 0.85, "f1": 0.8, "log_loss": 0.4})]
    [True, False, True]
    >>> threshold_gates(recent, {"roc_auc": 0.5})[0].message
    'metric roc_auc was not reported on recent (400 rows)'
    """
    gates = []
    for metric, threshold in thresholds.items():
        value = at.candidate.get(metric)
        gate = f"threshold:{metric}"
        if not _known(value):
            message = f"metric {metric} was not reported {at.where()}"
            gates.append(GateResult(gate=gate, passed=False, metric=metric, threshold=threshold, message=message))
            continue
        passed = reaches(metric, value, threshold)
        gates.append(
            GateResult(
                gate=gate,
                passed=passed,
                metric=metric,
                value=value,
                threshold=threshold,
                slice=at.name,
                message=f"{metric} {value:.4f} {relation(metric, passed)} {threshold:.4f} {at.where()}",
            )
        )
    return gates


def allowed(metric: str, margin_name: str, margin: float, allowance_name: str, allowance: float, of: str) -> str:
    """The margin and the allowance a goal was moved by, as a gate's message ends: in the metric's units, or as
    fractions of the reference's figure for an error in the label's units.

    >>> allowed("accuracy", "margin", 0.01, "chance allowance", 0.0512, "baseline")
    '(margin 0.01 + chance allowance 0.051)'
    >>> allowed("rmse", "margin", 0.01, "chance allowance", 0.0068, "baseline")
    "(margin 1% + chance allowance 0.68%, fractions of the baseline's rmse)"
    """
    if metric in IN_LABEL_UNITS:
        return (
            f"({margin_name} {amount(metric, margin)} + {allowance_name} {amount(metric, allowance)}, "
            f"fractions of the {of}'s {metric})"
        )
    return f"({margin_name} {margin:g} + {allowance_name} {allowance:.3f})"


def baseline_gate(metric: str, at: SliceFigures, margin: float) -> GateResult:
    """The candidate must beat the trivial baseline (always the majority class; for a regressor, the mean) by
    ``margin``, beyond what a model no better than it would reach by chance on the slice's rows
    (``chance_allowance``). On ``rmse`` and ``mae`` both are fractions of the baseline's error.

    >>> recent = SliceFigures("recent", 400, {"accuracy": 0.80}, baseline={"accuracy": 0.744})
    >>> gate = baseline_gate("accuracy", recent, 0.01)
    >>> gate.passed, round(gate.threshold, 4)
    (False, 0.8048)
    >>> gate.message.split(" on ")[1]
    'recent (400 rows) (margin 0.01 + chance allowance 0.051)'
    >>> baseline_gate("accuracy", SliceFigures("recent", 400, {"accuracy": 0.82}, {"accuracy": 0.744}), 0.01).passed
    True
    >>> gate = baseline_gate("rmse", SliceFigures("recent", 400, {"rmse": 9.9}, {"rmse": 10.0}), 0.01)
    >>> print(gate.message)  # doctest: +NORMALIZE_WHITESPACE
    rmse 9.9000 > 9.8321 = trivial baseline (the mean) 10.0000 -1.68% on recent (400 rows)
      (margin 1% + chance allowance 0.679%, fractions of the baseline's rmse)
    """
    candidate, baseline = at.candidate.get(metric), at.baseline.get(metric)
    allowance = chance_allowance(metric, at)
    what = "trivial baseline (the mean)" if metric in REGRESSION_METRICS else "trivial baseline (majority class)"
    result = _compare(f"beats_baseline:{metric}", metric, candidate, baseline, margin + allowance, what, at)
    if allowance:
        suffix = allowed(metric, "margin", margin, "chance allowance", allowance, "baseline")
        result = result.model_copy(update={"message": f"{result.message} {suffix}"})
    return result


def chance_allowance(metric: str, at: SliceFigures, z: float = 2.326) -> float:
    """How far beyond the trivial baseline a model no better than it reaches by chance on the slice's rows, one
    in a hundred times (``flywheel.common.evaluation.chance_allowance``, which training's online challenger
    applies too before it proposes a snapshot).

    >>> recent = SliceFigures("recent", 300, {}, baseline={"accuracy": 0.75, "balanced_accuracy": 0.5, "r2": 0.0})
    >>> round(chance_allowance("accuracy", recent), 3), round(chance_allowance("balanced_accuracy", recent), 3)
    (0.058, 0.078)
    """
    return evaluation.chance_allowance(metric, at.rows, at.baseline, z)


def champion_gate(metric: str, at: SliceFigures, min_improvement: float, champion: str | None) -> GateResult:
    """The candidate must reach the champion's score plus ``min_improvement`` on the same slice.

    >>> recent = SliceFigures("recent", 400, {"f1": 0.9}, champion={"f1": 0.95})
    >>> champion_gate("f1", recent, 0.0, "3").passed, champion_gate("f1", recent, -0.05, "3").passed
    (False, True)
    >>> champion_gate("f1", recent, 0.0, None).message
    'no champion yet'
    """
    gate = f"beats_champion:{metric}"
    candidate = at.candidate.get(metric)
    if champion is None:
        return GateResult(gate=gate, passed=True, metric=metric, value=candidate, message="no champion yet")
    if at.champion is None:
        return GateResult(
            gate=gate,
            passed=False,
            metric=metric,
            value=candidate,
            slice=at.name,
            message=f"champion v{champion} could not be compared {at.where()}: {at.problem or 'no score'}",
        )
    return _compare(gate, metric, candidate, at.champion.get(metric), min_improvement, f"champion v{champion}", at)


def before_gate(metric: str, at: SliceFigures, tolerance: float, champion: str | None) -> GateResult:
    """On the slice from before a drift the candidate may be at most ``tolerance`` worse than the
    champion, beyond the slice's own sampling error; on ``rmse`` and ``mae`` both are fractions of the
    champion's error (0.10: at most 10% higher).

    "Better on the new concept, not broken on the old": a retrain that learnt only the newest
    rows and forgot the rest fails here. The slice is small (a sample of the pre-drift rows), so a
    shortfall within one-sided 95% noise of the difference of two figures on its rows
    (``sampling_allowance``) is not counted against the candidate; log loss gets no allowance.

    >>> before = SliceFigures("before", 500, {"accuracy": 0.70}, champion={"accuracy": 0.80})
    >>> before_gate("accuracy", before, 0.05, "1").passed, before_gate("accuracy", before, 0.12, "1").passed
    (False, True)
    >>> noisy = SliceFigures("before", 180, {"accuracy": 0.7778}, champion={"accuracy": 0.8333})
    >>> gate = before_gate("accuracy", noisy, 0.05, "1")
    >>> gate.passed, round(gate.threshold, 3)
    (True, 0.715)
    >>> worse = SliceFigures("before", 400, {"rmse": 12.0}, champion={"rmse": 10.0})
    >>> print(before_gate("rmse", worse, 0.1, "1").message)  # doctest: +NORMALIZE_WHITESPACE
    rmse 12.0000 > 11.9085 = champion v1 10.0000 +19.1% on before (400 rows)
      (tolerance 10% + sampling allowance 9.08%, fractions of the champion's rmse)
    """
    gate = f"holds_before:{metric}"
    if champion is None:
        message = "no champion to compare with"
        return GateResult(gate=gate, passed=True, metric=metric, value=at.candidate.get(metric), message=message)
    allowance = sampling_allowance(metric, at.candidate.get(metric), (at.champion or {}).get(metric), at.rows)
    result = champion_gate(metric, at, -(tolerance + allowance), champion).model_copy(update={"gate": gate})
    if allowance:
        suffix = allowed(metric, "tolerance", tolerance, "sampling allowance", allowance, "champion")
        result = result.model_copy(update={"message": f"{result.message} {suffix}"})
    return result


# An error's standard error on n rows, as a fraction of it, times sqrt(n), at normal errors of spread s: squared
# errors vary as 2 s^4 around s^2 (the root: half that relative spread); |error| as s^2 (1 - 2/pi) around s sqrt(2/pi).
RELATIVE_SPREAD = {"rmse": math.sqrt(0.5), "mae": math.sqrt(math.pi / 2 - 1)}


def sampling_allowance(
    metric: str, candidate: float | None, champion: float | None, rows: int, z: float = 1.645
) -> float:
    """One-sided 95% noise of the difference of two figures measured on the same ``rows`` rows: of two rates;
    of two errors in the label's units as a fraction of the champion's (their standard errors at normal
    errors, ``RELATIVE_SPREAD``); of two R² (each's error ``(1 - r2) * sqrt(2 / rows)``). Log loss gets none.

    The two models' errors are taken as independent, which overstates the noise of their difference on
    the same rows (in the candidate's favour); heavier tails than normal errors' understate it.

    >>> round(sampling_allowance("accuracy", 0.78, 0.83, 180), 3), sampling_allowance("log_loss", 0.5, 0.4, 180)
    (0.069, 0.0)
    >>> round(sampling_allowance("rmse", 10.0, 10.0, 400), 4), round(sampling_allowance("r2", 0.6, 0.6, 400), 4)
    (0.0823, 0.0658)
    """
    if not _known(candidate) or not _known(champion) or rows <= 0:
        return 0.0
    if metric in IN_LABEL_UNITS:
        spread = RELATIVE_SPREAD[metric] * math.hypot(candidate, champion) / math.sqrt(rows)
        return z * spread / champion if champion > 0 else 0.0
    if metric == "r2":
        return z * math.sqrt(2 * ((1 - candidate) ** 2 + (1 - champion) ** 2) / rows)
    if metric in LOWER_IS_BETTER or not (0.0 <= candidate <= 1.0 and 0.0 <= champion <= 1.0):
        return 0.0
    return z * math.sqrt((candidate * (1 - candidate) + champion * (1 - champion)) / rows)


def judge(gates: GateSpec, slices: Mapping[str, SliceFigures], champion: str | None) -> list[GateResult]:
    """Every gate of a candidate: thresholds, baseline and champion on its out-of-time slice, the old concept.

    ``gates`` is complete (``resolve``d); ``slices`` holds ``recent`` (or an older run's ``eval``)
    and, on a drift retrain, ``before``.

    >>> recent = SliceFigures("recent", 400, {"accuracy": 0.82}, {"accuracy": 0.74}, {"accuracy": 0.79})
    >>> before = SliceFigures("before", 500, {"accuracy": 0.78}, {"accuracy": 0.70}, {"accuracy": 0.80})
    >>> policy = GateSpec(primary_metric="accuracy", thresholds={}, baseline_margin=0.01,
    ...     min_improvement=0.0, before_tolerance=0.05)
    >>> [(g.gate, g.passed) for g in judge(policy, {"recent": recent, "before": before}, "1")]
    [('beats_baseline:accuracy', True), ('beats_champion:accuracy', True), ('holds_before:accuracy', True)]
    """
    metric = gates.primary_metric or "accuracy"
    primary = slices.get(RECENT) or slices.get(EVAL) or next(s for n, s in slices.items() if n != BEFORE)
    results = threshold_gates(primary, gates.thresholds or {})
    results.append(baseline_gate(metric, primary, gates.baseline_margin or 0.0))
    results.append(champion_gate(metric, primary, gates.min_improvement or 0.0, champion))
    if BEFORE in slices:
        results.append(before_gate(metric, slices[BEFORE], gates.before_tolerance or 0.0, champion))
    return results


def failed(gates: list[GateResult]) -> list[str]:
    return [g.gate for g in gates if not g.passed]
