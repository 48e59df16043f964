"""Serving against the running stack: real Kafka, MinIO, MLflow, training, registry and serving.

Each test trains its own model (a unique name) so it never disturbs the demo's ``loans-approval``:
the registry announces the champion on ``models.champion`` and serving loads it from MLflow.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pandas as pd
import pytest
from river.datasets import synth

from flywheel.common.settings import KafkaSettings, ObjectStoreSettings
from flywheel.schemas import LABELS, MODELS_APPROVED, MODELS_ROLLOUT, PREDICTIONS, LabelObserved
from tests.integration.test_registry_gates import TOKEN, first_champion
from tests.integration.test_training_runs import (
    FLOATS,
    agrawal_rows,
    request_training,
    unique,
    wait_for,
    wait_for_model,
    write_version,
)
from tests.support.auth import OPERATOR
from tests.support.kafka import TopicReader, producer

pytestmark = pytest.mark.usefixtures("topics")


def live_applications(n: int, function: int = 0, seed: int = 99) -> list[tuple[dict[str, Any], int]]:
    """Live traffic: applications without their label, and the label that will arrive later."""
    stream = synth.Agrawal(classification_function=function, seed=seed)
    return [
        (
            {
                "applicant_id": f"live-{seed}-{i}",
                "applied_at": "2026-02-01T10:00:00+00:00",
                **{k: float(v) if k in FLOATS else int(v) for k, v in x.items()},
            },
            int(y),
        )
        for i, (x, y) in enumerate(stream.take(n))
    ]


async def served(serving: str, name: str, version: str, timeout: float = 60) -> None:
    """Wait until serving answers for ``name`` with ``version``."""
    probe = live_applications(1)[0][0]
    deadline = asyncio.get_running_loop().time() + timeout
    async with httpx.AsyncClient(base_url=serving, timeout=10) as http:
        while True:
            try:  # the first request may wait for the model to load: on a busy machine, past the client's timeout
                response = await http.post(f"/models/{name}/predict", json={"records": [probe]})
                answer = response.text
            except httpx.TimeoutException as exc:
                response, answer = None, repr(exc)
            if (
                response
                and response.status_code == 200
                and response.json()["predictions"][0]["model_version"] == version
            ):
                return
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"serving never answered with {name} v{version}: {answer}")
            await asyncio.sleep(0.5)


async def champion_and_challenger(
    kafka: KafkaSettings,
    store: ObjectStoreSettings,
    services: dict,
    name: str,
    candidate_function: int,
    champion_confusion: float = 0.0,
) -> None:
    """v1 (trained on function 0) serves as champion; v2 (on ``candidate_function``) is approved.

    ``champion_confusion``: the share of v1's training rows labelled by function 2 instead, so that
    v1 is measurably worse on function-0 traffic (0.3: about 87% right, where v2 is right on all; 0.15 left
    it 98.4% right, a gap a four-step canary could not decide in the test's 12,000 requests).
    """
    confused = int(1200 * champion_confusion)
    rows = pd.concat([agrawal_rows(1200 - confused, 0, 41), agrawal_rows(confused, 2, 43)], ignore_index=True)
    await first_champion(kafka, services, write_version(store, rows), name)
    await served(services["serving"], name, "1")
    async with TopicReader(kafka.bootstrap_servers, MODELS_APPROVED.name) as approved:
        rows = agrawal_rows(1200, candidate_function, 41 if candidate_function == 0 else 43)
        await request_training(services["training"], name, write_version(store, rows))
        [approval] = await wait_for(approved, name, timeout=90)
    assert approval["version"] == "2"


async def promote_and_follow(services: dict, name: str, version: str, timeout: float = 60) -> dict:
    """Promote ``version`` through the registry's API; serving's view of the model once it holds it as champion."""
    async with httpx.AsyncClient(base_url=services["registry"], timeout=10) as http:
        promoted = await http.post(f"/models/{name}/promote", json={"version": version, "actor": "it"}, headers=TOKEN)
        assert promoted.status_code == 200, promoted.text
    # a probe may be answered by the canary's candidate (also ``version``): ask serving which champion it holds
    deadline = asyncio.get_running_loop().time() + timeout
    async with httpx.AsyncClient(base_url=services["serving"], timeout=10) as http:
        while (model := (await http.get("/models")).json().get(name, {})).get("champion_version") != version:
            assert asyncio.get_running_loop().time() < deadline, f"serving still holds {model}"
            await asyncio.sleep(0.5)
    return model


async def drive_until(
    serving: str | list[str], kafka: KafkaSettings, name: str, rollouts: TopicReader, action: str, function: int = 0
) -> tuple[list[dict], list[dict]]:
    """Live traffic in batches, each answer labelled right after, until the rollout reaches ``action``.

    Given several serving replicas, the batches go to each in turn. Returns every answer and the
    rollout's events up to ``action``.
    """
    replicas = [serving] if isinstance(serving, str) else serving
    answers: list[dict] = []
    events: list[dict] = []
    labels = await producer(kafka.bootstrap_servers)
    traffic = live_applications(12000, function=function)  # a 4-point difference may take 6000
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            for start in range(0, len(traffic), 25):
                chunk = traffic[start : start + 25]
                replica = replicas[start // 25 % len(replicas)]
                response = await http.post(f"{replica}/models/{name}/predict", json={"records": [r for r, _ in chunk]})
                assert response.status_code == 200, response.text
                for answer, (record, truth) in zip(response.json()["predictions"], chunk, strict=True):
                    answers.append(answer)
                    label = LabelObserved(
                        producer="it",
                        dataset="loans",
                        label=truth,
                        prediction_id=answer["prediction_id"],
                        entity_id=record["applicant_id"],  # the key: it meets its answer on the same partition
                    )
                    await labels.send(LABELS.name, label.to_bytes(), key=LABELS.key_of(label))
                await labels.flush()
                events = await rollout_actions(rollouts, name, action, timeout=0.05, must=False)
                if any(e["action"] == action for e in events):
                    return answers, events
    finally:
        await labels.stop()
    raise AssertionError(f"rollout of {name} never reached {action!r} in {len(answers)} requests: {events}")


async def rollout_actions(
    reader: TopicReader, name: str, until: str, timeout: float = 60, must: bool = True
) -> list[dict]:
    try:
        await reader.collect(
            lambda found: any(e["model_name"] == name and e["action"] == until for e in found), timeout=timeout
        )
    except AssertionError:
        if must:
            raise
    return [e for e in reader.seen if e["model_name"] == name]


async def test_shadow_logs_both_answers_and_returns_only_the_champions(kafka: KafkaSettings, store_settings, services):
    name = unique("it-shadow")
    async with TopicReader(kafka.bootstrap_servers, MODELS_ROLLOUT.name) as rollouts:
        await champion_and_challenger(kafka, store_settings, services, name, candidate_function=0)
        await rollout_actions(rollouts, name, "started")  # the configured canary starts on approval
    async with httpx.AsyncClient(base_url=services["serving"], headers=OPERATOR, timeout=30) as http:
        started = await http.post("/rollouts", json={"model_name": name, "version": "2", "strategy": "shadow"})
        assert started.status_code == 202, started.text
        async with TopicReader(kafka.bootstrap_servers, PREDICTIONS.name) as log:
            traffic = [r for r, _ in live_applications(40)]
            response = await http.post(f"/models/{name}/predict", json={"records": traffic})
            assert response.status_code == 200
            answers = response.json()["predictions"]
            logged = await log.collect(
                lambda found: len(found) >= 80, timeout=30, where=lambda b: b["model_name"] == name
            )
        status = (await http.get("/rollout")).json()
    assert {(a["model_version"], a["variant"]) for a in answers} == {("1", "champion")}
    shadow = {e["request_id"]: e for e in logged if not e["served"]}
    returned = {e["request_id"]: e for e in logged if e["served"]}
    assert set(shadow) == set(returned) == {a["request_id"] for a in answers}
    assert {e["model_version"] for e in shadow.values()} == {"2"} and {e["variant"] for e in shadow.values()} == {
        "shadow"
    }
    [active] = [r for r in status["active"] if r["model_name"] == name]
    assert active["strategy"] == "shadow" and active["candidate_traffic"] == 0.0
    assert active["figures"]["candidate"]["requests"] >= 40


async def test_a_better_canary_reaches_full_traffic_and_becomes_champion(
    kafka: KafkaSettings, store_settings, services
):
    name = unique("it-canary")
    async with TopicReader(kafka.bootstrap_servers, MODELS_ROLLOUT.name) as rollouts:
        await champion_and_challenger(
            kafka, store_settings, services, name, candidate_function=0, champion_confusion=0.3
        )
        await rollout_actions(rollouts, name, "started")
        answers, events = await drive_until(services["serving"], kafka, name, rollouts, "promoted")
    actions = [e["action"] for e in events]
    assert actions == ["started", "stepped", "stepped", "stepped", "promoted"], actions
    assert [e["candidate_traffic"] for e in events] == [0.1, 0.25, 0.5, 1.0, 1.0]
    for decided in events[1:]:  # every step and the promotion rest on a significant difference in accuracy
        accuracy = decided["tests"]["accuracy"]
        assert accuracy["significant"] and accuracy["candidate"] > accuracy["champion"], decided
        assert accuracy["p_value"] <= accuracy["alpha"] and accuracy["candidate_n"] >= 100
    print(
        f"\npromoted on {events[-1]['tests']['accuracy']['candidate_n']} + "
        f"{events[-1]['tests']['accuracy']['champion_n']} labels, after {len(answers)} requests: {events[-1]['reason']}"
    )
    assert events[-1]["causation_id"] == events[-2]["event_id"]  # each step caused by the one before
    assert {a["variant"] for a in answers} == {"champion", "candidate"}
    detail = await wait_for_model(services["registry"], name, lambda b: b["aliases"].get("champion") == "2")
    assert detail["aliases"]["previous"] == "1"
    await served(services["serving"], name, "2", timeout=10)


async def test_a_canary_that_does_worse_on_live_traffic_is_rolled_back_with_the_reason(
    kafka: KafkaSettings, store_settings, services
):
    name = unique("it-rollback")
    async with TopicReader(kafka.bootstrap_servers, MODELS_ROLLOUT.name) as rollouts:
        # v2 learned another concept (it beats v1 on its own data, so the registry approves it),
        # but live traffic still follows v1's: on labels, it is clearly worse
        await champion_and_challenger(kafka, store_settings, services, name, candidate_function=2)
        await rollout_actions(rollouts, name, "started")
        answers, events = await drive_until(services["serving"], kafka, name, rollouts, "rolled_back")
    rolled_back = events[-1]
    assert "accuracy" in rolled_back["reason"]
    assert rolled_back["figures"]["candidate"]["accuracy"] < rolled_back["figures"]["champion"]["accuracy"]
    accuracy = rolled_back["tests"]["accuracy"]
    assert accuracy["significant"] and accuracy["p_value"] <= accuracy["alpha"] and accuracy["candidate_n"] >= 100
    print(
        f"\nrolled back on {accuracy['candidate_n']} + {accuracy['champion_n']} labels, "
        f"after {len(answers)} requests: {rolled_back['reason']}"
    )
    assert all(a["model_version"] in {"1", "2"} for a in answers)
    detail = await wait_for_model(services["registry"], name, lambda b: True)
    assert detail["aliases"]["champion"] == "1"
    await served(services["serving"], name, "1", timeout=10)


async def test_no_request_fails_while_traffic_switches_to_a_new_model(kafka: KafkaSettings, store_settings, services):
    name = unique("it-switch")
    async with TopicReader(kafka.bootstrap_servers, MODELS_ROLLOUT.name) as rollouts:
        await champion_and_challenger(kafka, store_settings, services, name, candidate_function=0)
        await rollout_actions(rollouts, name, "started")
    traffic = [r for r, _ in live_applications(50)]
    statuses: list[int] = []
    versions: list[str] = []
    stop = asyncio.Event()

    async def steady_load(http: httpx.AsyncClient, offset: int) -> None:
        i = offset
        while not stop.is_set():
            response = await http.post(f"/models/{name}/predict", json={"records": [traffic[i % len(traffic)]]})
            statuses.append(response.status_code)
            if response.status_code == 200:
                versions.append(response.json()["predictions"][0]["model_version"])
            i += 1

    async with httpx.AsyncClient(base_url=services["serving"], headers=OPERATOR, timeout=30) as http:
        load = [asyncio.create_task(steady_load(http, k)) for k in range(4)]
        await asyncio.sleep(1.0)
        switched = await http.post("/rollouts", json={"model_name": name, "version": "2", "strategy": "blue_green"})
        assert switched.status_code == 202, switched.text
        await wait_for_model(services["registry"], name, lambda b: b["aliases"].get("champion") == "2")
        await asyncio.sleep(1.0)
        stop.set()
        await asyncio.gather(*load)
    assert len(statuses) > 50 and set(statuses) == {200}, f"{len(statuses)} requests: {set(statuses)}"
    # the approval's canary may answer a first request with v2 before the switch: v1 served, then only v2
    assert "1" in versions and versions[-1] == "2"


async def test_promote_through_the_registry_api_is_followed_by_serving(kafka: KafkaSettings, store_settings, services):
    name = unique("it-follow")
    async with TopicReader(kafka.bootstrap_servers, MODELS_ROLLOUT.name) as rollouts:
        await champion_and_challenger(kafka, store_settings, services, name, candidate_function=0)
        await rollout_actions(rollouts, name, "started")
    model = await promote_and_follow(services, name, "2")
    async with httpx.AsyncClient(base_url=services["serving"], timeout=10) as http:
        status = (await http.get("/rollout")).json()
    assert model["rollout"] is False
    assert not [r for r in status["active"] if r["model_name"] == name]  # the rollout ended with the promotion
