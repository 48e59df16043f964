"""Registry's why: a version's story from its loop's events, timed, with the holes in its causation chain."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import httpx
from fastapi import FastAPI

from flywheel.registry.why import explain
from flywheel.registry.why_http import create_why_router
from flywheel.schemas import (
    ChampionChanged,
    DriftDetected,
    Event,
    FeatureDrift,
    GateResult,
    Lineage,
    ModelApproved,
    ModelTrained,
    RolloutStepped,
    TrainModel,
)
from flywheel.schemas.models import SequentialTest

T0 = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
NAME = "loans-approval"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def rollout(cause: Event, action: str, seconds: float, step: int = 0, traffic: float = 0.25) -> RolloutStepped:
    test = SequentialTest(
        metric="accuracy",
        candidate=0.93,
        champion=0.61,
        difference=0.32,
        candidate_n=120,
        champion_n=400,
        std_error=0.04,
        log_likelihood_ratio=9.1,
        p_value=0.0001,
        alpha=0.025,
        significant=True,
    )
    return RolloutStepped(
        occurred_at=at(seconds),
        producer="serving",
        model_name=NAME,
        candidate_version="2",
        champion_version="1",
        strategy="canary",
        action=action,
        step=step,
        candidate_traffic=traffic,
        reason=f"{action} on live figures",
        figures={"candidate": {"requests": 480.0, "accuracy": 0.93}, "champion": {"requests": 1400.0}},
        tests={"accuracy": test} if action != "started" else {},
        **cause.caused(),
    )


def drift_loop() -> list[Event]:
    """The demo's loop: concept drift on v1 → retrain → v2 approved → canary → promoted → champion."""
    drift = DriftDetected(
        occurred_at=at(0),
        producer="monitoring",
        dataset="loans",
        model_name=NAME,
        kind="concept",
        features=[FeatureDrift(feature="error_rate", statistic="adwin", value=0.31, threshold=0.1, drifted=True)],
        window_size=500,
        model_version="1",
        retrain=True,
    )
    request = TrainModel(
        occurred_at=at(0),
        producer="training",
        model_name=NAME,
        dataset="loans",
        trigger="drift",
        reason="concept drift in error_rate over 500 records",
        causation_chain=[str(drift.event_id)],
        **drift.caused(),
    )
    lineage = Lineage(
        dataset="loans",
        dataset_version="v9",
        dataset_versions=["v8", "v9"],
        code_version="c1",
        model_spec="default",
        params={"max_depth": 6},
        seed=7,
        causation_chain=[str(drift.event_id), str(request.event_id)],
        window={"mode": "after_drift", "rows": 1200},
    )
    trained = ModelTrained(
        occurred_at=at(95),
        producer="training",
        model_name=NAME,
        run_id="run-2",
        model_uri="runs:/run-2/model",
        metrics={"balanced_accuracy": 0.92},
        lineage=lineage,
        duration_s=12.5,
        **request.caused(),
    )
    gates = [GateResult(gate="beats_champion", passed=True, message="0.92 >= champion 0.60 on recent")]
    approved = ModelApproved(
        occurred_at=at(97),
        producer="registry",
        model_name=NAME,
        version="2",
        run_id="run-2",
        model_uri="models:/loans-approval/2",
        metrics=trained.metrics,
        gates=gates,
        champion_version="1",
        **trained.caused(),
    )
    started = rollout(approved, "started", 99)
    stepped = rollout(started, "stepped", 130, step=1, traffic=0.5)
    promoted = rollout(stepped, "promoted", 160, step=1, traffic=1.0)
    champion = ChampionChanged(
        occurred_at=at(161),
        producer="registry",
        model_name=NAME,
        version="2",
        previous_version="1",
        action="promote",
        actor="serving",
        reason="canary better",
        **promoted.caused(),
    )
    return [drift, request, trained, approved, started, stepped, promoted, champion]


def lineage_of(events: list[Event], **overrides: Any) -> dict[str, Any]:
    drift, request, trained, approved = events[:4]
    return {
        "model_name": NAME,
        "version": "2",
        "status": "approved",
        "aliases": ["champion"],
        "run_id": "run-2",
        "params": {"label_batches": "labels-0001,labels-0002"},
        "trigger": "drift",
        "correlation_id": str(drift.correlation_id),
        "causation_chain": [str(drift.event_id), str(request.event_id), str(trained.event_id), str(approved.event_id)],
        **overrides,
    }


def test_the_drift_trained_champion_has_the_whole_chain_timed_and_no_hole():
    events = drift_loop()
    unrelated = TrainModel(model_name=NAME, dataset="loans", occurred_at=at(50))  # another loop: not in the story
    story = explain([*reversed(events), unrelated, events[3]], lineage_of(events))  # any order, a redelivery
    assert story["holes"] == []
    stages = [(s["stage"], s["event_type"]) for s in story["steps"]]
    assert stages == [
        ("drift", "DriftDetected"),
        ("request", "TrainModel"),
        ("run", "ModelTrained"),
        ("decision", "ModelApproved"),
        ("rollout", "RolloutStepped"),
        ("rollout", "RolloutStepped"),
        ("rollout", "RolloutStepped"),
        ("champion", "ChampionChanged"),
    ]
    assert [s["since_start_s"] for s in story["steps"]] == [0, 0, 95, 97, 99, 130, 160, 161]
    assert [s["since_previous_s"] for s in story["steps"]][1:4] == [0, 95, 2]
    assert story["duration_s"] == 161 and story["started_at"] == at(0).isoformat()
    drift, request, run, decision, started, _, promoted, champion = story["steps"]
    assert drift["figures"]["statistics"][0]["statistic"] == "adwin" and drift["figures"]["window"]["size"] == 500
    assert "concept drift on v1" in drift["summary"]
    assert request["figures"]["trigger"] == "drift" and "error_rate" in request["summary"]
    assert run["figures"]["data_versions"] == ["v8", "v9"] and run["figures"]["label_cutoff"] == "labels-0002"
    assert run["figures"]["params"] == {"max_depth": 6} and run["figures"]["metrics"] == {"balanced_accuracy": 0.92}
    assert decision["figures"]["gates"][0]["message"].startswith("0.92 >= champion")
    assert "challenger to v1" in decision["summary"]
    assert started["figures"]["action"] == "started"
    assert promoted["figures"]["tests"]["accuracy"]["significant"] is True
    assert promoted["figures"]["live"]["candidate"]["accuracy"] == 0.93
    assert champion["summary"] == "champion promote: v1 → v2 by serving (canary better)"


def test_a_champion_move_that_names_no_cause_is_a_hole():
    events = drift_loop()
    events[-1] = events[-1].model_copy(update={"causation_id": None})  # serving promoted without saying why
    story = explain(events, lineage_of(events))
    assert len(story["holes"]) == 1
    assert "ChampionChanged" in story["holes"][0] and "names no cause" in story["holes"][0]


def test_a_missing_stage_and_a_cause_outside_the_loop_are_holes():
    events = drift_loop()
    lineage = lineage_of(events)
    del events[1]  # the training request never reached its topic
    story = explain(events, lineage)
    holes = "\n".join(story["holes"])
    assert "no TrainModel" in holes
    assert f"ModelTrained {events[1].event_id} (run) names cause" in holes  # its cause is the missing request


def test_an_operator_promotion_is_no_hole():
    events = drift_loop()[:4]
    by_hand = ChampionChanged(
        occurred_at=at(200),
        model_name=NAME,
        version="2",
        previous_version="1",
        action="promote",
        actor="ops-alice",
        correlation_id=events[0].correlation_id,
    )
    events.append(by_hand)
    story = explain(events, lineage_of(events))
    assert story["holes"] == ["no RolloutStepped: v2 was approved as challenger"]


def test_a_rolled_back_candidate_ends_with_its_rollback_and_no_hole():
    events = drift_loop()[:5]
    rolled_back = rollout(events[-1], "rolled_back", 140)
    lineage = lineage_of(events, status="rolled_back", aliases=[])
    story = explain([*events, rolled_back], lineage)
    assert story["holes"] == []
    assert story["steps"][-1]["figures"]["action"] == "rolled_back" and story["duration_s"] == 140


def test_a_champion_later_rolled_back_shows_the_rollback_after_its_loop():
    events = drift_loop()
    back = ChampionChanged(
        occurred_at=at(400), model_name=NAME, version="1", previous_version="2", action="rollback", actor="serving"
    )
    story = explain([*events, back], lineage_of(events, aliases=["previous"]))
    last = story["steps"][-1]
    assert last["in_loop"] is False and last["summary"].startswith("champion rollback: v2 → v1")
    assert story["holes"] == []


def test_a_first_model_has_no_drift_and_its_approval_makes_it_champion():
    request = TrainModel(occurred_at=at(0), producer="cli", model_name=NAME, dataset="loans", trigger="api")
    trained = ModelTrained(
        occurred_at=at(30),
        producer="training",
        model_name=NAME,
        run_id="run-1",
        model_uri="runs:/run-1/model",
        metrics={"balanced_accuracy": 0.9},
        lineage=Lineage(dataset="loans", dataset_version="v1", code_version="c", model_spec="default", seed=1),
        duration_s=5,
        **request.caused(),
    )
    approved = ModelApproved(
        occurred_at=at(31),
        model_name=NAME,
        version="1",
        run_id="run-1",
        model_uri="models:/loans-approval/1",
        metrics=trained.metrics,
        gates=[],
        **trained.caused(),
    )
    first = ChampionChanged(
        occurred_at=at(31), model_name=NAME, version="1", action="promote", actor="registry", **approved.caused()
    )
    lineage = {"model_name": NAME, "version": "1", "aliases": ["champion"], "trigger": "api"}
    lineage["correlation_id"] = str(request.correlation_id)
    story = explain([first, approved, trained, request], lineage)
    assert story["holes"] == []
    assert [s["stage"] for s in story["steps"]] == ["request", "run", "decision", "champion"]
    assert "first model" in story["steps"][2]["summary"]
    without_champion = explain([approved, trained, request], lineage)
    assert without_champion["holes"] == [
        "no ChampionChanged making first model v1 champion",
        "v1 is champion, but no ChampionChanged in its loop made it so",
    ]


async def test_why_routes_answer_the_story_and_404_without_a_champion():
    events = drift_loop()

    async def read(name: str) -> list[Event]:
        return events

    async def run(fn, *args):
        return fn(*args)

    models = {NAME: {"aliases": {"champion": "2"}}, "fresh": {"aliases": {}}}
    registrar = SimpleNamespace(
        read=run,
        describe_sync=lambda name: models[name],
        lineage_sync=lambda name, version: lineage_of(events, version=version),
    )
    app = FastAPI()
    app.include_router(create_why_router(registrar, read))  # type: ignore[arg-type]

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as http:
        champion = await http.get(f"/models/{NAME}/why")
        version = await http.get(f"/models/{NAME}/versions/2/why")
        fresh = await http.get("/models/fresh/why")
        bad = await http.get(f"/models/{NAME}/versions/x/why")
    assert champion.status_code == 200 and champion.json()["holes"] == [] and len(champion.json()["steps"]) == 8
    assert version.json() == champion.json()
    assert fresh.status_code == 404 and "no champion" in fresh.json()["detail"]
    assert bad.status_code == 404
