"""The online challenger on the running stack (issue 20): a river model learns the labelled answers beside
the batch champion, and after a concept change its snapshot is logged, gated, shadowed and promoted.

The champion is ``challenged.yaml``'s batch model, fit on one concept. The traffic then follows another,
labelled right after each answer: monitoring sees the concept drift, training's online challenger learns
the new concept from ``predictions.labelled`` and proposes a snapshot that beats the answers served on
labels it never learnt; the registry gates it against the champion on those labels, serving shadows it
and promotes it. (The drift's batch retrain waits for fresh ingested rows, which this test sends none of:
the e2e test of the demo's loop sees it replace the online model.)
"""

from __future__ import annotations

import asyncio

import httpx
import mlflow
import pytest

from flywheel.common.settings import KafkaSettings
from flywheel.common.tracking import Tags
from flywheel.schemas import (
    LABELS,
    MODELS_APPROVED,
    MODELS_ROLLOUT,
    MONITORING_DRIFT,
    TRAINING_COMPLETED,
    LabelObserved,
)
from tests.integration.test_registry_gates import first_champion
from tests.integration.test_serving_rollouts import live_applications, rollout_actions, served
from tests.integration.test_training_runs import (
    agrawal_rows,
    monitored_reference,
    unique,
    wait_for_model,
    write_version,
)
from tests.support.kafka import TopicReader, producer

pytestmark = pytest.mark.usefixtures("topics")

RATE = 100  # records a second, each labelled right after its answer: a live stream, not a flood


async def drive_at(
    serving: str, kafka: KafkaSettings, name: str, rollouts: TopicReader, action: str, function: int, max_s: float = 180
) -> tuple[list[dict], list[dict]]:
    """Live traffic at ``RATE`` in batches of ten, each answer labelled right after, until the rollout reaches
    ``action``; every answer and the rollout's events."""
    answers: list[dict] = []
    events: list[dict] = []
    labels = await producer(kafka.bootstrap_servers)
    traffic = live_applications(int(RATE * max_s), function=function)
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        async with httpx.AsyncClient(base_url=serving, timeout=30) as http:
            for start in range(0, len(traffic), 10):
                chunk = traffic[start : start + 10]
                response = await http.post(f"/models/{name}/predict", json={"records": [r for r, _ in chunk]})
                assert response.status_code == 200, response.text
                for answer, (record, truth) in zip(response.json()["predictions"], chunk, strict=True):
                    answers.append(answer)
                    label = LabelObserved(
                        producer="it",
                        dataset="loans",
                        label=truth,
                        prediction_id=answer["prediction_id"],
                        entity_id=record["applicant_id"],
                    )
                    await labels.send(LABELS.name, label.to_bytes(), key=LABELS.key_of(label))
                await labels.flush()
                events = await rollout_actions(rollouts, name, action, timeout=0.01, must=False)
                if any(e["action"] == action for e in events):
                    return answers, events
                await asyncio.sleep(max(0.0, started + (start + 10) / RATE - loop.time()))
    finally:
        await labels.stop()
    raise AssertionError(f"rollout of {name} never reached {action!r} in {len(answers)} requests: {events}")


async def test_after_a_concept_change_the_online_challenger_is_learnt_gated_shadowed_and_promoted(
    kafka: KafkaSettings, store_settings, mlflow_settings, services
):
    name = unique("it-challenged")
    old_concept = write_version(store_settings, agrawal_rows(1200, function=0, seed=51))
    await first_champion(kafka, services, old_concept, name, model_spec="challenged")
    await served(services["serving"], name, "1")
    await monitored_reference(services["monitoring"], name)

    readers = [
        TopicReader(kafka.bootstrap_servers, t.name) for t in (TRAINING_COMPLETED, MODELS_APPROVED, MONITORING_DRIFT)
    ]
    async with readers[0] as completed, readers[1] as approved, readers[2] as drifts:
        async with TopicReader(kafka.bootstrap_servers, MODELS_ROLLOUT.name) as rollouts:
            answers, events = await drive_at(services["serving"], kafka, name, rollouts, "promoted", function=2)
        ours = lambda b: b.get("model_name") == name  # noqa: E731
        concept = lambda b: ours(b) and b["kind"] == "concept"  # noqa: E731
        drift = (await drifts.collect(bool, timeout=10, where=concept))[0]
        online = lambda b: ours(b) and b["lineage"]["learning"] == "online"  # noqa: E731
        trained = await completed.collect(bool, timeout=10, where=online)
        approvals = await approved.collect(bool, timeout=10, where=ours)

    # the snapshot: caused by the concept drift, learnt online, judged on labels it never learnt
    snapshot = next(t for t in trained if any(a["run_id"] == t["run_id"] for a in approvals))
    assert snapshot["causation_id"] == drift["event_id"], (snapshot["causation_id"], drift)
    assert snapshot["lineage"]["causation_chain"] == [drift["event_id"]]
    online = snapshot["lineage"]["online"]
    assert online["drift_event_id"] == drift["event_id"] and online["labels_learned"] >= 150, online
    scores = online["scores"]
    assert online["judged_on"] == "balanced_accuracy" and scores["copy"] > max(scores["served"], scores["baseline"])
    assert snapshot["lineage"]["eval_slices"] == {"recent": "eval/recent.parquet"}

    # gated like any candidate: against the champion on the very labels the snapshot never learnt
    approval = next(a for a in approvals if a["run_id"] == snapshot["run_id"])
    assert approval["champion_version"] == "1" and all(g["passed"] for g in approval["gates"]), approval
    champion_gate = next(g for g in approval["gates"] if g["gate"].startswith("beats_champion"))
    assert champion_gate["value"] > champion_gate["reference"], champion_gate

    # shadowed (challenged.yaml's rollout) and promoted on significantly better answers
    started = next(e for e in events if e["action"] == "started" and e["candidate_version"] == approval["version"])
    promoted = events[-1]
    assert started["strategy"] == "shadow" and promoted["candidate_version"] == approval["version"], events
    accuracy = promoted["tests"]["accuracy"]
    assert accuracy["significant"] and accuracy["candidate"] > accuracy["champion"], promoted
    await wait_for_model(services["registry"], name, lambda b: b["aliases"].get("champion") == approval["version"])
    await served(services["serving"], name, approval["version"], timeout=30)
    assert {a["variant"] for a in answers} == {"champion"}  # a shadow never answers a client

    # what serves is river's tree, saved with skops (no pickle), tagged with the batch recipe to retrain with
    mlflow.set_tracking_uri(mlflow_settings.tracking_uri)
    info = mlflow.models.get_model_info(f"models:/{name}/{approval['version']}")
    assert info.flavors["sklearn"]["serialization_format"] == "skops"
    run = mlflow.get_run(info.run_id)
    assert run.data.params["estimator"] == "river.tree.ExtremelyFastDecisionTreeClassifier"
    assert run.data.tags[Tags.MODEL_SPEC] == "challenged" and run.data.tags[Tags.LEARNING] == "online"

    # its lineage and its why: the drift, the snapshot, the gate, the shadow, the promotion; no hole
    async with httpx.AsyncClient(base_url=services["registry"], timeout=30) as http:
        lineage = (await http.get(f"/models/{name}/versions/{approval['version']}/lineage")).json()
        why = (await http.get(f"/models/{name}/versions/{approval['version']}/why")).json()
    assert lineage["learning"] == "online" and lineage["causation_chain"][0] == drift["event_id"], lineage
    assert why["holes"] == [], why["holes"]
    stages = [s["event_type"] for s in why["steps"] if s["in_loop"]]
    assert stages[0] == "DriftDetected" and "TrainModel" in stages, stages  # the batch retrain the drift asked for
    assert stages[-1] == "ChampionChanged", stages
    run_step = next(
        s for s in why["steps"] if s["event_type"] == "ModelTrained" and s["figures"]["run_id"] == run.info.run_id
    )
    assert run_step["summary"].startswith("online snapshot 1"), run_step

    # monitoring judges the online champion's traffic against the rows it learnt
    deadline = asyncio.get_running_loop().time() + 60
    while (reference := await monitored_reference(services["monitoring"], name))["model_version"] != approval[
        "version"
    ]:
        assert asyncio.get_running_loop().time() < deadline, f"monitoring kept the reference of v1: {reference}"
        await asyncio.sleep(0.5)
    assert reference["dataset_version"] == "learnt online", reference
