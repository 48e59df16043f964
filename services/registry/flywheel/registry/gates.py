"""Quality gates: pure decisions over a candidate's metrics and the champion's score."""

from __future__ import annotations

from collections.abc import Mapping

from flywheel.schemas import GateResult


def threshold_gates(metrics: Mapping[str, float], thresholds: Mapping[str, float]) -> list[GateResult]:
    """One gate per configured threshold: the metric must reach it.

    >>> [g.passed for g in threshold_gates({"accuracy": 0.9, "f1": 0.7}, {"accuracy": 0.85, "f1": 0.8})]
    [True, False]
    >>> threshold_gates({}, {"auc": 0.5})[0].message
    'metric auc was not reported'
    """
    gates = []
    for metric, threshold in thresholds.items():
        value = metrics.get(metric)
        if value is None or value != value:  # missing or NaN
            gates.append(
                GateResult(
                    gate=f"threshold:{metric}",
                    passed=False,
                    metric=metric,
                    threshold=threshold,
                    message=f"metric {metric} was not reported",
                )
            )
            continue
        passed = value >= threshold
        gates.append(
            GateResult(
                gate=f"threshold:{metric}",
                passed=passed,
                metric=metric,
                value=value,
                threshold=threshold,
                message=f"{metric} {value:.4f} {'>=' if passed else '<'} {threshold:.4f}",
            )
        )
    return gates


def champion_gate(
    metric: str,
    candidate: float | None,
    champion: float | None,
    min_improvement: float,
    champion_version: str | None,
    problem: str | None = None,
) -> GateResult:
    """The candidate must reach the champion's score plus ``min_improvement`` on the same data.

    >>> champion_gate("f1", 0.9, 0.95, 0.0, "3").passed, champion_gate("f1", 0.95, 0.95, 0.0, "3").passed
    (False, True)
    >>> champion_gate("f1", 0.5, None, 0.0, None).message
    'no champion yet'
    """
    gate = f"beats_champion:{metric}"
    if champion_version is None:
        return GateResult(gate=gate, passed=True, metric=metric, value=candidate, message="no champion yet")
    if problem is not None or candidate is None or champion is None:
        return GateResult(
            gate=gate,
            passed=False,
            metric=metric,
            value=candidate,
            message=f"champion v{champion_version} could not be compared: {problem or 'no score'}",
        )
    threshold = champion + min_improvement
    passed = candidate >= threshold
    return GateResult(
        gate=gate,
        passed=passed,
        metric=metric,
        value=candidate,
        threshold=threshold,
        message=(
            f"{metric} {candidate:.4f} {'>=' if passed else '<'} champion v{champion_version} "
            f"{champion:.4f} + {min_improvement:g} on the candidate's evaluation data"
        ),
    )


def failed(gates: list[GateResult]) -> list[str]:
    return [g.gate for g in gates if not g.passed]
