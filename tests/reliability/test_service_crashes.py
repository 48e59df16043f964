"""SIGKILL of each of the six services in the middle of a stream, then a restart by the launcher.

Each test sends half of its records, prediction requests and labels, kills the service as soon as
its first output of the stream is out (so the kill lands while it works), sends the other half
while it is down, restarts it, and then counts every output exactly: nothing accepted is lost,
nothing is counted twice, and every consumer has caught up with everything sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import datetime

import httpx
import pytest

from flywheel.common.settings import KafkaSettings, MlflowSettings
from flywheel.schemas import (
    FEATURES_ONLINE,
    LABELS,
    MODELS_APPROVED,
    MODELS_CHAMPION,
    MODELS_REJECTED,
    MODELS_ROLLOUT,
    PREDICTIONS,
    PREDICTIONS_LABELLED,
    RECORDS_VALIDATED,
    TRAINING_COMPLETED,
    LabelObserved,
    PredictionMade,
)
from tests.integration.test_training_runs import agrawal_rows, request_training, write_version
from tests.reliability.conftest import restart, sigkill
from tests.reliability.outcomes import (
    assert_exact,
    counted,
    first_output,
    outcome,
    tag,
    train_through,
)
from tests.reliability.traffic import (
    FAST,
    SharedModel,
    Stream,
    Tally,
    answered,
    caught_up,
    drain,
    lags,
    report,
    tally,
)
from tests.support import stack
from tests.support.auth import OPERATOR
from tests.support.kafka import TopicReader, producer, send_event

pytestmark = [pytest.mark.usefixtures("topics"), pytest.mark.timeout(300)]


@pytest.mark.parametrize(
    ("service", "topic", "field"),
    [("ingestion", RECORDS_VALIDATED.name, "record_id"), ("features", FEATURES_ONLINE.name, "entity_id")],
)
async def test_a_record_service_killed_mid_stream_loses_nothing_and_counts_nothing_twice(
    kafka: KafkaSettings, store_settings, model: SharedModel, service: str, topic: str, field: str
):
    async with Stream(kafka, tag(service), model.name) as stream:
        await stream.send(0)
        await first_output(stream, topic, field)
        pid = sigkill(service)
        await stream.send(1)  # while it is down
        await stream.label()
        took = await restart(service)
        tallies, behind, text = await outcome(
            stream, store_settings, kafka, f"SIGKILL {service} (pid {pid}) mid-stream, back in {took:.0f} s"
        )
    assert_exact(tallies, behind, text)


async def test_serving_killed_mid_stream_and_mid_canary_answers_every_request_once_and_resumes_or_ends_the_rollout(
    kafka: KafkaSettings, store_settings, model: SharedModel
):
    async with httpx.AsyncClient(base_url=stack.service_url("serving"), headers=OPERATOR, timeout=30) as http:
        state = await answered(http, model.name)
        if not state.get("rollout"):  # a canary of the other version, so a rollout is under way
            other = next(v for v in model.versions if v != state["champion_version"])
            started = await http.post(
                "/rollouts", json={"model_name": model.name, "version": other, "strategy": "canary"}
            )
            assert started.status_code == 202, started.text
        [active] = [r for r in (await http.get("/rollout")).json()["active"] if r["model_name"] == model.name]
    async with (
        Stream(kafka, tag("serving"), model.name) as stream,
        TopicReader(kafka.bootstrap_servers, MODELS_ROLLOUT.name) as rollouts,
    ):
        await stream.send(0)
        await first_output(stream, PREDICTIONS.name, "request_id")
        pid = sigkill("serving")
        killed_at = time.time()
        # labels of the answers given before the kill, joined while serving is down: the resumed canary's judge
        # must still have them (read again from predictions.labelled), beside the figures of its last event
        while_down = await stream.label()
        joins = stream.readers[PREDICTIONS_LABELLED.name]
        await drain(joins, lambda seen: len(seen) >= while_down, 30, stream.mine("request_id"))
        await stream.send(1)
        took = await restart("serving")
        judged = await labels_judged(active["candidate_version"], model.name, at_least=labelled(active) + while_down)
        tallies, behind, text = await outcome(
            stream,
            store_settings,
            kafka,
            f"SIGKILL serving (pid {pid}) mid-stream and mid-canary, back in {took:.0f} s",
        )
        await drain(rollouts, lambda _: False, 1, lambda b: b["model_name"] == model.name)
        async with httpx.AsyncClient(base_url=stack.service_url("serving"), timeout=30) as http:
            after = [r for r in (await http.get("/rollout")).json()["active"] if r["model_name"] == model.name]
    ended = [
        e
        for e in rollouts.seen
        if e["model_name"] == model.name
        and e["candidate_version"] == active["candidate_version"]
        and e["action"] in ("promoted", "rolled_back", "aborted", "inconclusive")
    ]
    resumed = [r for r in after if r["candidate_version"] == active["candidate_version"]]
    report(
        "  rollout",
        f"canary of v{active['candidate_version']} at step {active['step']} before the kill; after: "
        f"{'resumed at step ' + str(resumed[0]['step']) if resumed else 'not active'}; "
        f"ending events: {[e['action'] for e in ended]}; labels judged before the kill {labelled(active)}, "
        f"{while_down} more joined while serving was down, judged after the restart: {judged}",
    )
    assert_exact(tallies, behind, text)
    assert resumed or ended, f"the canary of v{active['candidate_version']} vanished at the restart ({killed_at=})"
    if judged is None:  # the canary ended after the restart: its ending event carries the figures it ended on
        after_kill = [e for e in ended if datetime.fromisoformat(e["occurred_at"]).timestamp() > killed_at]
        assert after_kill, f"the canary ended before the kill: {ended}"
        judged = labelled(after_kill[-1])
    assert judged >= labelled(active) + while_down, "the resumed canary lost labels it had"


def labelled(rollout: dict) -> int:
    """The labels a rollout's judge has credited to its two variants (as serving's ``/rollout`` shows it)."""
    return sum(int(rollout["figures"][variant].get("labelled", 0)) for variant in ("champion", "candidate"))


async def labels_judged(version: str, name: str, at_least: int, timeout: float = 60) -> int | None:
    """The labels the canary of ``version`` judges on after serving's restart, once it has ``at_least`` (or at
    the timeout); None when it does not run (again) by then. A restarted replica resumes the rollout when the
    group gives it the model's approvals, after the killed member's session has expired."""
    deadline, found = time.monotonic() + timeout, None
    async with httpx.AsyncClient(base_url=stack.service_url("serving"), timeout=30) as http:
        while time.monotonic() < deadline:
            active = [r for r in (await http.get("/rollout")).json()["active"] if r["model_name"] == name]
            if not active or active[0]["candidate_version"] != version:
                await asyncio.sleep(0.2)
                continue
            found = labelled(active[0])
            if found >= at_least:
                return found
            await asyncio.sleep(0.2)
    return found


def answers_of(name: str, total: int) -> list[PredictionMade]:
    """Answers of a model of one test alone, on a dataset with a contract."""
    return [
        PredictionMade(
            producer="reliability",
            dataset="loans",
            prediction_id=f"{name}-{i}",
            entity_id=f"{name}-e{i}",
            model_name=name,
            model_version="1",
            variant="champion",
            prediction=i % 2,
            features={"salary": 20_000.0 + i},
            latency_ms=1.0,
        )
        for i in range(total)
    ]


def labels_of(predictions: list[PredictionMade]) -> list[LabelObserved]:
    """A label for each answer, naming it, keyed by its entity (labels and answers of an entity share a
    partition number)."""
    return [
        LabelObserved(
            producer="reliability",
            dataset="loans",
            label=(i * 7) % 2,
            prediction_id=p.prediction_id,
            entity_id=p.entity_id,
        )
        for i, p in enumerate(predictions)
    ]


async def publish(kafka: KafkaSettings, events: list) -> None:
    send = await producer(kafka.bootstrap_servers)
    try:
        for event in events:
            await send_event(send, event)
    finally:
        await send.stop()


async def test_monitoring_killed_mid_stream_joins_every_label_to_its_prediction_once(
    kafka: KafkaSettings, store_settings, model: SharedModel
):
    """Monitoring's inputs are the prediction log and labels: a model of this test alone, whose labels
    find it by the predictions they name."""
    name = tag("monitoring")
    total = 300
    predictions = answers_of(name, total)
    labels = labels_of(predictions)
    monitoring = stack.service_url("monitoring")

    async def seen() -> dict:
        async with httpx.AsyncClient(timeout=10) as http:
            response = await http.get(f"{monitoring}/drift", params={"model": name})
        return response.json()["models"][0] if response.status_code == 200 else {}

    async with Stream(kafka, name, model.name) as stream:
        await stream.send(0)
        await publish(kafka, predictions[: total // 2])
        deadline = time.monotonic() + 60
        while not (await seen()).get("predictions_seen") and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        pid = sigkill("monitoring")
        await publish(kafka, predictions[total // 2 :])
        await stream.send(1)
        took = await restart("monitoring")
        await caught_up(kafka, timeout=60)
        async with TopicReader(kafka.bootstrap_servers, PREDICTIONS_LABELLED.name) as labelled:
            await publish(kafka, labels)
            lines, behind = await counted(stream, store_settings, kafka)
            ours = await labelled.collect(lambda seen: len(seen) >= total, where=lambda b: b.get("model_name") == name)
        state = await seen()
    # each label joined once, even to a prediction made before the kill (the join rebuilt what it remembered)
    published = tally("predictions.labelled", total, ours, key=lambda b: b["label_event_id"])
    joined = Tally("monitoring labels joined", total, distinct=state.get("labels_joined", 0))
    predicted = Tally("monitoring predictions counted", total, distinct=state.get("predictions_seen", 0))
    text = report(
        f"SIGKILL monitoring (pid {pid}) mid-stream, back in {took:.0f} s",
        *lines,
        predicted,
        published,
        joined,
        f"consumer lag left: {behind or 'none'}",
    )
    assert_exact([*[t for t in lines if isinstance(t, Tally)], predicted, published, joined], behind, text)


async def test_labels_waiting_for_their_answer_are_joined_after_monitoring_is_killed(kafka: KafkaSettings):
    """A label read before its answer waits for it in memory, and was committed when it was parked. Half the
    labels here are joined before the kill, half still wait when monitoring is SIGKILLed; their answers come
    after the restart. Each label is joined exactly once: the waiting ones parked again from ``labels``,
    the joined ones not again."""
    name = tag("parked")
    total = 40
    predictions = answers_of(name, total)
    labels = labels_of(predictions)
    ours = lambda body: body.get("model_name") == name  # noqa: E731
    async with TopicReader(kafka.bootstrap_servers, PREDICTIONS_LABELLED.name) as labelled:
        await publish(kafka, [*predictions[: total // 2], *labels])
        await labelled.collect(lambda seen: len(seen) >= total // 2, where=ours)
        read = {"flywheel-monitoring": [PREDICTIONS.name, LABELS.name]}
        deadline = time.monotonic() + 60
        while (behind := await lags(kafka.bootstrap_servers, read)) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert not behind, f"monitoring had not read every label before the kill: {behind}"
        pid = sigkill("monitoring")
        took = await restart("monitoring")
        await publish(kafka, predictions[total // 2 :])
        with contextlib.suppress(AssertionError):  # all of them, and anything joined twice right behind
            await labelled.collect(lambda seen: len(seen) > total, timeout=20, where=ours)
        joined = [b for b in labelled.seen if ours(b)]
    published = tally("predictions.labelled", total, joined, key=lambda b: b["label_event_id"])
    text = report(f"SIGKILL monitoring (pid {pid}) with {total // 2} labels waiting, back in {took:.0f} s", published)
    assert_exact([published], {}, text)
    assert len(joined) == total, f"{len(joined)} joins published for {total} labels:\n{text}"


@pytest.mark.timeout(480)  # a training run on two busy cores, and a restart
async def test_training_killed_mid_run_ends_the_run_exactly_once(
    kafka: KafkaSettings, store_settings, mlflow_settings: MlflowSettings, model: SharedModel
):
    async def crash(stream: Stream, stage: str) -> str:
        pid = sigkill("training")
        await stream.send(1)
        took = await restart("training")
        return f"SIGKILL training (pid {pid}) at run stage {stage!r}, back in {took:.0f} s"

    *_, ended = await train_through(kafka, store_settings, mlflow_settings, model.name, "training", crash)
    assert len(ended) == 1, f"run outcomes: {ended}"


async def test_registry_killed_while_gating_decides_each_candidate_exactly_once(
    kafka: KafkaSettings, store_settings, model: SharedModel
):
    name = tag("registry")
    version = write_version(store_settings, agrawal_rows(1200, function=0, seed=6))
    async with (
        Stream(kafka, name, model.name) as stream,
        TopicReader(kafka.bootstrap_servers, TRAINING_COMPLETED.name) as completed,
        TopicReader(kafka.bootstrap_servers, MODELS_APPROVED.name) as approved,
        TopicReader(kafka.bootstrap_servers, MODELS_REJECTED.name) as rejected,
        TopicReader(kafka.bootstrap_servers, MODELS_CHAMPION.name) as champion,
    ):
        await stream.send(0)
        await request_training(stack.service_url("training"), name, version, params=FAST, timeout=60)
        [trained] = await completed.collect(
            lambda seen: len(seen) >= 1, timeout=240, where=lambda b: b["model_name"] == name
        )
        pid = sigkill("registry")  # the registry is gating this candidate now
        await stream.send(1)
        took = await restart("registry")
        mine = lambda b: b.get("model_name") == name  # noqa: E731
        await drain(approved, lambda seen: len(seen) >= 1, 60, mine)
        await asyncio.sleep(3)
        for reader in (approved, rejected, champion):
            await drain(reader, lambda _: False, 0.5, mine)
        tallies, behind, text = await outcome(
            stream, store_settings, kafka, f"SIGKILL registry (pid {pid}) while gating, back in {took:.0f} s"
        )
    decisions = tally("gate decisions (run id)", 1, [*approved.seen, *rejected.seen], lambda e: e["run_id"])
    promotions = tally("champion moves (version)", 1, champion.seen, lambda e: e["version"])
    report("  registry", decisions, promotions, f"run {trained['run_id']}")
    assert_exact([*tallies, decisions, promotions], behind, text)
