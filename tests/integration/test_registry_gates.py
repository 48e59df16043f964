"""The registry against the running stack: gates, challenger, rejection, promote and rollback."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from flywheel.common.settings import KafkaSettings
from flywheel.schemas import MODELS_APPROVED, MODELS_CHAMPION, MODELS_REJECTED
from tests.integration.test_training_runs import (
    agrawal_rows,
    request_training,
    unique,
    wait_for,
    wait_for_model,
    write_version,
)
from tests.support.auth import OPERATOR, PRODUCER
from tests.support.kafka import TopicReader

pytestmark = pytest.mark.usefixtures("topics")

TOKEN = OPERATOR


async def first_champion(kafka: KafkaSettings, services: dict, version: str, name: str, **extra: Any) -> None:
    async with TopicReader(kafka.bootstrap_servers, MODELS_CHAMPION.name) as champion:
        await request_training(services["training"], name, version, **extra)
        [changed] = await wait_for(champion, name, timeout=120)  # a training run on two busy cores
    assert changed["version"] == "1" and changed["reason"] == "first model" and changed["action"] == "promote"


async def test_a_worse_candidate_is_rejected_with_the_failing_gates_and_the_champion_stays(
    kafka: KafkaSettings, store_settings, services
):
    version = write_version(store_settings, agrawal_rows(1200, function=0, seed=21))
    name = unique("it-reject")
    await first_champion(kafka, services, version, name)

    async with TopicReader(kafka.bootstrap_servers, MODELS_REJECTED.name) as rejected:
        await request_training(services["training"], name, version, params={"shuffle_labels": True})
        [rejection] = await wait_for(rejected, name, timeout=60)
    # the default gate: no better than "always the majority class" out of time, and worse than the champion
    assert "beats_baseline:balanced_accuracy" in rejection["failed_gates"]
    assert "beats_champion:balanced_accuracy" in rejection["failed_gates"]
    assert rejection["version"] == "2" and rejection["champion_version"] == "1"
    gate = next(g for g in rejection["gates"] if g["gate"] == "beats_champion:balanced_accuracy")
    assert gate["threshold"] == pytest.approx(1.0) and gate["value"] < 0.9  # champion scored on the same slice
    baseline = next(g for g in rejection["gates"] if g["gate"] == "beats_baseline:balanced_accuracy")
    assert "trivial baseline (majority class)" in baseline["message"] and baseline["reference"] == pytest.approx(0.5)

    detail = await wait_for_model(services["registry"], name, lambda b: len(b["versions"]) == 2)
    assert detail["aliases"] == {"champion": "1"}
    [v2] = [v for v in detail["versions"] if v["version"] == "2"]
    assert v2["status"] == "rejected" and v2["tags"]["flywheel.gate.beats_baseline:balanced_accuracy"] == "failed"
    async with httpx.AsyncClient(base_url=services["registry"], timeout=10) as http:
        refused = await http.post(f"/models/{name}/promote", json={"version": "2", "actor": "it"}, headers=TOKEN)
    assert refused.status_code == 409 and "rejected" in refused.json()["detail"]


async def test_a_better_or_equal_candidate_becomes_challenger_then_promote_and_rollback_move_the_champion(
    kafka: KafkaSettings, store_settings, services
):
    first = write_version(store_settings, agrawal_rows(1000, function=2, seed=31))
    second = write_version(store_settings, agrawal_rows(1000, function=2, seed=32))
    name = unique("it-promote")
    await first_champion(kafka, services, first, name)

    async with TopicReader(kafka.bootstrap_servers, MODELS_APPROVED.name) as approved:
        await request_training(services["training"], name, second)
        [approval] = await wait_for(approved, name, timeout=60)
    assert approval["version"] == "2" and approval["champion_version"] == "1"
    assert all(g["passed"] for g in approval["gates"])
    await wait_for_model(services["registry"], name, lambda b: b["aliases"].get("challenger") == "2")

    registry = services["registry"]
    async with (
        httpx.AsyncClient(base_url=registry, timeout=20) as http,
        TopicReader(kafka.bootstrap_servers, MODELS_CHAMPION.name) as champion,
    ):
        body = {"version": "2", "reason": "canary healthy", "actor": "mallory"}  # a body's actor is not believed
        assert (await http.post(f"/models/{name}/promote", json=body)).status_code == 401
        unknown = {"Authorization": "Bearer nope"}
        assert (await http.post(f"/models/{name}/promote", json=body, headers=unknown)).status_code == 401
        assert (await http.post(f"/models/{name}/promote", json=body, headers=PRODUCER)).status_code == 403
        missing = await http.post("/models/no-such-model/promote", json=body, headers=TOKEN)
        assert missing.status_code == 404 and "no model" in missing.json()["detail"]
        assert (
            await http.post(f"/models/{name}/promote", json={**body, "version": "9"}, headers=TOKEN)
        ).status_code == 404

        promoted = await http.post(f"/models/{name}/promote", json=body, headers=TOKEN)
        assert promoted.status_code == 200, promoted.text
        assert promoted.json()["aliases"] == {"champion": "2", "previous": "1"}
        again = await http.post(f"/models/{name}/promote", json=body, headers=TOKEN)
        assert again.status_code == 409

        rolled = await http.post(f"/models/{name}/rollback", json={"reason": "worse", "actor": "ops"}, headers=TOKEN)
        assert rolled.status_code == 200 and rolled.json()["aliases"] == {"champion": "1"}
        assert (await http.post(f"/models/{name}/rollback", json={"actor": "ops"}, headers=TOKEN)).status_code == 409
        moves = await wait_for(champion, name, count=2, timeout=20)
        lineage = (await http.get(f"/models/{name}/versions/2/lineage")).json()

    assert [(m["action"], m["version"], m["previous_version"], m["actor"]) for m in moves] == [
        ("promote", "2", "1", "dev-operator"),
        ("rollback", "1", "2", "dev-operator"),
    ]
    assert [h["action"] for h in lineage["history"]] == ["promote", "rollback"]
    assert lineage["dataset_version"] == second and lineage["history"][0]["actor"] == "dev-operator"


async def test_unknown_models_and_versions_answer_404_not_500(services):
    async with httpx.AsyncClient(base_url=services["registry"], timeout=10) as http:
        answers = [
            await http.get("/models/no-such-model"),
            await http.get("/models/no-such-model/versions/1"),
            await http.get("/models/no-such-model/versions/x/lineage"),
            await http.post("/models/no-such-model/rollback", json={"actor": "t"}, headers=TOKEN),
        ]
    assert [a.status_code for a in answers] == [404, 404, 404, 404]
    assert all(a.json()["detail"] for a in answers)
