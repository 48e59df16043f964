"""Drift check on one window: the monitor's per-feature statistics vs Evidently's data-drift report.

Both sides run the same test per feature: the two-sample Kolmogorov-Smirnov test, Evidently's
``ks`` method (its defaults would switch to Wasserstein above 1,000 reference rows), at the
threshold the monitor applies after its Bonferroni correction (alpha / features). Half the
features are unchanged; the other half shift by 0.005 to 0.5 standard deviations, so some sit
near the threshold at every size. Numeric features only: Evidently's chi-squared is a
goodness-of-fit test where the monitor runs one of homogeneity, so they are not the same test.

The monitor profiles its reference once per champion (sorted values, CDF, quantile bins): that
cost is printed on its own; each window then costs one sort and a few binary searches per feature.
Evidently is given the two DataFrames and builds its report, as its users call it.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import pandas as pd

from flywheel.monitoring.statistics import ReferenceProfile, Thresholds
from tests.bench.support import ratios, side_by_side, spread, table

SIZES = [(1_000, 10), (1_000, 100), (10_000, 10), (10_000, 100), (100_000, 10), (100_000, 100)]
ALPHA = Thresholds().alpha


def samples(rows: int, features: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    columns = [f"f{i}" for i in range(features)]
    shifts = np.zeros(features)
    shifts[features // 2 :] = np.geomspace(0.005, 0.5, features - features // 2)
    reference = pd.DataFrame(rng.normal(size=(rows, features)), columns=columns)
    current = pd.DataFrame(rng.normal(size=(rows, features)) + shifts, columns=columns)
    return reference, current


def evidently_pvalues(reference: pd.DataFrame, current: pd.DataFrame) -> dict[str, float]:
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(numerical_columns=list(reference.columns))
    report = Report([DataDriftPreset(num_method="ks", num_threshold=ALPHA / len(reference.columns))])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        snapshot = report.run(
            Dataset.from_pandas(current, data_definition=definition),
            Dataset.from_pandas(reference, data_definition=definition),
        )
    return {
        metric["config"]["column"]: float(metric["value"])
        for metric in snapshot.dict()["metrics"]
        if metric["config"]["type"].endswith(":ValueDrift")
    }


async def measure(rows: int, features: int) -> tuple[str, ...]:
    """One size: both sides alternately, REPEATS times; the table's row."""
    reference, current = samples(rows, features, seed=rows + features)
    started = time.perf_counter()
    profile = ReferenceProfile.of({c: reference[c].to_numpy() for c in reference}, set())
    profiled = time.perf_counter() - started
    window = {c: current[c].to_numpy() for c in current}
    verdicts, theirs = {}, {}

    async def ours() -> float:
        started = time.perf_counter()
        verdicts.update({v.feature: v for v in profile.detect(window)})
        return time.perf_counter() - started

    async def evidently() -> float:
        started = time.perf_counter()
        theirs.update(evidently_pvalues(reference, current))
        return time.perf_counter() - started

    ours_s, theirs_s = await side_by_side(ours, evidently)
    threshold = ALPHA / features
    agree = sum((v.p_corrected < ALPHA) == (theirs[f] <= threshold) for f, v in verdicts.items())
    drifted = sum(p <= threshold for p in theirs.values())
    gap = max(abs(v.p_value - theirs[f]) for f, v in verdicts.items())
    return (
        f"{rows:,} x {features}",
        f"{profiled * 1e3:.0f}",
        spread([s * 1e3 for s in ours_s], digits=1),
        spread(theirs_s, digits=2),
        spread(ratios(theirs_s, ours_s), "x", digits=0),
        f"{agree}/{features} ({drifted} drifted)",
        f"{gap:.1e}",
    )


async def main() -> None:
    measured = []
    for rows, features in SIZES:
        measured.append(await measure(rows, features))
        print(f"   {rows:,} x {features} measured", flush=True)
    header = (
        "rows x features",
        "profile ms (once)",
        "monitor ms min/med/max",
        "Evidently s min/med/max",
        "speed-up min/med/max",
        "same verdicts",
        "max |p gap|",
    )
    table(measured, header)
    print(f"   aim: >= 10x at every size with the same verdicts (KS at alpha/features, alpha {ALPHA})")
