"""The figures the gates judge, gathered from MLflow: a run's held-out slices scored by the candidate,
the champion (each with its own pinned feature set) and the trivial baseline (the majority class, or
for a regression run, ``Lineage.task``, the mean).

Runs logged before out-of-time slices (no ``Lineage.eval_slices``) keep the older evidence:
the candidate's reported metrics and the champion scored on the candidate's random split.
"""

from __future__ import annotations

from typing import Protocol

import pandas as pd

from flywheel.registry.gates import BEFORE, EVAL, RECENT, SliceFigures
from flywheel.registry.scoring import Scorer, baseline_metrics, labelled, reported_baseline
from flywheel.schemas import ModelTrained


class Models(Protocol):
    """What gathering needs of the model store."""

    def slice(self, run_id: str, artifact: str) -> pd.DataFrame: ...
    def scorer(self, model_uri: str, run_id: str) -> Scorer: ...
    def version(self, name: str, version: str): ...
    def eval_split(self, run_id: str, artifact: str, label: str) -> tuple[pd.DataFrame, pd.Series]: ...
    def score_version(self, name: str, version: str, features: pd.DataFrame, labels: pd.Series) -> dict: ...


def problem_of(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]


def gather(store: Models, trained: ModelTrained, champion: str | None) -> dict[str, SliceFigures]:
    """Every slice's figures; a champion that cannot be scored is named with why, never raised.

    A candidate that cannot be scored on its own slices raises: the run is broken or MLflow
    is unreachable, and the handler's retries (then the dead letters) say which.
    """
    lineage = trained.lineage
    if not lineage.eval_slices:
        return {EVAL: older_evidence(store, trained, champion)}
    label, task = lineage.label or "label", lineage.task
    candidate = store.scorer(trained.model_uri, trained.run_id)
    rival, problem = rival_of(store, trained, champion)
    figures = {}
    for name, artifact in lineage.eval_slices.items():
        records, labels = labelled(store.slice(trained.run_id, artifact), label, task)
        if labels.empty:  # nothing to judge on: a before slice is left out, an empty recent fails its gates
            if name != BEFORE:
                figures[name] = SliceFigures(name, 0, {}, problem="the slice has no labelled rows")
            continue
        baseline = baseline_metrics(labels, task)
        if name == RECENT:  # the run's own baseline: the majority (or the mean) of its training rows
            baseline.update(reported_baseline(trained.metrics))
        scored, why = None, problem
        if rival is not None:
            try:
                scored = rival.score(records, labels)
            except Exception as exc:
                why = problem_of(exc)
        figures[name] = SliceFigures(name, len(labels), candidate.score(records, labels), baseline, scored, why)
    return figures


def rival_of(store: Models, trained: ModelTrained, champion: str | None) -> tuple[Scorer | None, str | None]:
    """The champion's scorer, or None and why it cannot judge the candidate (never raised: it fails the gate).

    A champion of the other task (a classifier, where the candidate is a regressor) answers in other
    figures: the model itself says which it is, whatever the run that made it recorded.
    """
    if champion is None:
        return None, None
    try:
        run_id = store.version(trained.model_name, champion).run_id
        rival = store.scorer(f"models:/{trained.model_name}/{champion}", run_id)
    except Exception as exc:  # an incomparable champion fails the champion gate, named
        return None, problem_of(exc)
    if rival.task != trained.lineage.task:
        return None, f"champion v{champion} is a {rival.task} model and the candidate a {trained.lineage.task} one"
    return rival, None


def older_evidence(store: Models, trained: ModelTrained, champion: str | None) -> SliceFigures:
    """A run without out-of-time slices: its reported metrics, the champion on its random split."""
    label = trained.lineage.label or "label"
    baseline, rows, scored, problem = reported_baseline(trained.metrics), trained.lineage.eval_rows or 0, None, None
    try:
        features, labels = store.eval_split(trained.run_id, trained.lineage.eval_artifact or "", label)
        baseline = {**baseline_metrics(labels, trained.lineage.task), **baseline}
        rows = len(labels)
        if champion is not None:
            scored = store.score_version(trained.model_name, champion, features, labels)
    except Exception as exc:  # an incomparable champion fails the gate, named, not the service
        problem = problem_of(exc)
    candidate = {k: v for k, v in trained.metrics.items() if not k.startswith("baseline_")}
    return SliceFigures(EVAL, rows, candidate, baseline, scored, problem)
