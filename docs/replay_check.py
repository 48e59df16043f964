"""A replayed dataset checked offline, before any stack: ``python -m docs.replay_check rain``.

What the loop will see, computed with the same code the services use: the model of
``model.yaml`` trained on the history (as training would, on a held-out share), how it scores
before and after the declared change, what a retrain on the first labelled rows after the
change recovers, and when monitoring's statistics (``MONITORING_*`` defaults) would call data
drift and concept drift. Quote its output in ``docs/bring-your-own-dataset.md``.
"""

from __future__ import annotations

import argparse
from collections import deque
from pathlib import Path

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score
from sklearn.model_selection import train_test_split

from flywheel.common.featuresets import load_feature_set
from flywheel.common.modelspec import load_model_spec
from flywheel.demo.replay import Replay
from flywheel.monitoring.concept import ErrorStream
from flywheel.monitoring.monitor import MonitorConfig
from flywheel.monitoring.statistics import detect_drift

DATASETS = Path(__file__).resolve().parents[1] / "datasets"


def scores(model, x, y) -> str:
    p = model.predict_proba(x)[:, 1]
    return (
        f"AUC {roc_auc_score(y, p):.3f}  accuracy {accuracy_score(y, p > 0.5):.3f}  "
        f"F1 {f1_score(y, p > 0.5):.3f}  (majority class {max(np.mean(y), 1 - np.mean(y)):.3f}, n={len(y)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", nargs="?", default="rain")
    parser.add_argument("--fresh-rows", type=int, default=1000, help="TRAINING_DRIFT_FRESH_ROWS")
    args = parser.parse_args()
    replay = Replay.load(DATASETS, args.dataset)
    features, spec = load_feature_set(DATASETS, args.dataset), load_model_spec(DATASETS, args.dataset)
    if spec.task != "classification":  # its figures (AUC, accuracy, the 0/1 error stream) are a classifier's
        raise SystemExit(
            f"{args.dataset}: replay_check checks classification replays; {spec.model_name} is a "
            f"{spec.task} model (its loop's figures: tests/e2e/test_real_data_loop.py)"
        )
    phases = {name: list(replay.phase(name, "check")) for name in ("history", "stable", "drifted")}
    xy = {name: (np.array(features.matrix(r.record for r in rows)), np.array([r.label for r in rows]))
          for name, rows in phases.items()}  # fmt: skip
    change = replay.spec.phases.change

    x, y = xy["history"]
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=spec.test_size, random_state=spec.seed)
    print(f"{spec.model_name} ({spec.estimator.path.rsplit('.', 1)[-1]}) on history {replay.spec.phases.history}")
    print(f"  held-out share (what training logs)   {scores(spec.build().fit(x_train, y_train), x_test, y_test)}")
    model = spec.build().fit(x, y)
    print(f"  stable {replay.spec.phases.stable}              {scores(model, *xy['stable'])}")
    drifted_x, drifted_y = xy["drifted"]
    print(f"  after the change, first 1000 rows    {scores(model, drifted_x[:1000], drifted_y[:1000])}")
    print(f"  after the change, all {len(drifted_y)} rows      {scores(model, drifted_x, drifted_y)}")
    fresh = args.fresh_rows
    retrained = spec.build().fit(drifted_x[:fresh], drifted_y[:fresh])
    print(f"retrained on the first {fresh} rows after the change, scored on the rest:")
    print(f"  {scores(retrained, drifted_x[fresh:], drifted_y[fresh:])}")

    config = MonitorConfig()
    print(f"data drift, window {config.window_size}, every {config.check_every}, from {config.min_window}:")
    reference = {name: x[:, i] for i, name in enumerate(features.names)}
    stream_x = np.vstack([xy["stable"][0], drifted_x])
    first_row = replay.spec.phases.stable[0]
    window: deque[np.ndarray] = deque(maxlen=config.window_size)
    since = 0
    for n, row in enumerate(stream_x):
        window.append(row)
        since += 1
        if since < config.check_every or len(window) < config.min_window:
            continue
        since = 0
        current = np.array(window)
        verdicts = detect_drift(reference, {f: current[:, i] for i, f in enumerate(features.names)}, set())
        alerts = [f"{v.feature} {v.psi:.2f}" for v in verdicts if v.alert]
        retrain = any(v.retrain for v in verdicts)
        when = "before" if first_row + n < change else "after"
        print(f"  row {first_row + n} ({when} the change): {'RETRAIN ' if retrain else ''}{', '.join(alerts) or '-'}")
        if first_row + n >= change + 2 * config.check_every:
            break

    stream_y = np.concatenate([xy["stable"][1], drifted_y])
    wrong = model.predict(stream_x) != stream_y
    for detector in ("page_hinkley", "adwin"):
        errors = ErrorStream(detector=detector)  # type: ignore[arg-type]
        fired = [first_row + n for n, w in enumerate(wrong) if errors.update(bool(w))]
        print(f"concept drift ({detector}) on the first model's errors fires at rows {fired[:4]} (change at {change})")


if __name__ == "__main__":
    main()
