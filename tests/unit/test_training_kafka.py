"""Training's subscribers on the in-memory broker: drift to request, requests to the intake."""

import base64
import json

from faststream.kafka import TestKafkaBroker

from flywheel.common.kafka import create_broker
from flywheel.common.settings import KafkaSettings
from flywheel.schemas import (
    DATASETS_VERSIONED,
    DEADLETTERS,
    MONITORING_DRIFT,
    TRAINING_REQUESTED,
    DatasetManifest,
    DatasetVersioned,
    DriftDetected,
    TrainModel,
)
from flywheel.training.arrivals import Arrivals
from flywheel.training.coalesce import Coalescer
from flywheel.training.ended import EndedRequests
from flywheel.training.intake import Intake
from flywheel.training.runs import RunBook


class FakeCoalescer(Coalescer):
    def __init__(self) -> None:
        super().__init__(0.0, None, RunBook().add)  # type: ignore[arg-type]
        self.submitted: list[TrainModel] = []

    def submit(self, request: TrainModel) -> None:  # type: ignore[override]
        self.submitted.append(request)


async def wired(arrivals: Arrivals | None = None):
    from flywheel.training.subscribers import register_subscribers

    broker = create_broker(KafkaSettings(retry_backoff_s=0), service="training-test")
    coalescer = FakeCoalescer()
    intake = Intake(coalescer, EndedRequests())
    register_subscribers(broker, intake, "training-test", arrivals or Arrivals(), {"loans"})
    await intake.assigned({0})  # what the consumer group does before any message arrives
    return broker, coalescer, intake


async def test_every_sealed_version_or_label_batch_is_heard_as_an_arrival_of_its_dataset():
    arrivals = Arrivals()
    broker, _, _ = await wired(arrivals)
    manifest = DatasetManifest(
        dataset="loans", version="v", content_hash="v", row_count=1, columns={}, uri="", kind="labels"
    )
    versioned = DatasetVersioned(dataset="loans", version="v", manifest=manifest, producer="t")
    async with TestKafkaBroker(broker) as test_broker:
        await test_broker.publish(versioned.to_bytes(), DATASETS_VERSIONED.name)
    assert arrivals.heard == {"loans": 1}


async def test_a_retrain_drift_publishes_a_train_command_that_reaches_the_coalescer():
    broker, coalescer, _ = await wired()
    drift = DriftDetected(dataset="loans", model_name="m", kind="data", window_size=10, retrain=True, producer="t")
    async with TestKafkaBroker(broker) as test_broker:
        await test_broker.publish(drift.to_bytes(), MONITORING_DRIFT.name)
        await test_broker.publish(drift.to_bytes(), MONITORING_DRIFT.name)  # redelivered
    assert len(coalescer.submitted) == 1
    [request] = coalescer.submitted
    assert request.causation_id == drift.event_id and request.trigger == "drift"


async def test_drift_without_retrain_requests_nothing_and_duplicate_requests_are_dropped():
    broker, coalescer, _ = await wired()
    drift = DriftDetected(dataset="loans", model_name="m", kind="data", window_size=10, retrain=False, producer="t")
    request = TrainModel(model_name="m", dataset="loans", producer="t")
    async with TestKafkaBroker(broker) as test_broker:
        await test_broker.publish(drift.to_bytes(), MONITORING_DRIFT.name)
        for _ in range(3):
            await test_broker.publish(request.to_bytes(), TRAINING_REQUESTED.name)
    assert [r.event_id for r in coalescer.submitted] == [request.event_id]


async def test_a_malformed_request_goes_to_dead_letters_and_the_next_one_is_taken():
    broker, coalescer, _ = await wired()
    request = TrainModel(model_name="m", dataset="loans", producer="t")
    letters: list[dict] = []

    @broker.subscriber(DEADLETTERS.name)
    async def collect(body: dict) -> None:
        letters.append(body)

    async with TestKafkaBroker(broker) as test_broker:
        await test_broker.publish(b'{"model_name": 1}', TRAINING_REQUESTED.name)
        await test_broker.publish(request.to_bytes(), TRAINING_REQUESTED.name)
    assert [r.event_id for r in coalescer.submitted] == [request.event_id]
    assert len(letters) == 1 and letters[0]["source_topic"] == TRAINING_REQUESTED.name


async def test_poison_requests_and_drifts_are_dead_lettered_and_committed_past_and_the_good_ones_taken():
    broker, coalescer, intake = await wired()
    committed: list[dict[int, int]] = []

    async def commit(points: dict[int, int]) -> None:
        committed.append(points)

    intake.commit = commit
    letters: list[dict] = []

    @broker.subscriber(DEADLETTERS.name)
    async def collect(body: dict) -> None:
        letters.append(body)

    request = TrainModel(model_name="m", dataset="loans", producer="t")
    long_name = TrainModel(model_name="m", dataset="loans", producer="t").model_dump(mode="json")
    poison_requests = [b"\x00\xff not json", b"", json.dumps({**long_name, "model_name": "x" * 10_000}).encode()]
    drift = DriftDetected(dataset="loans", model_name="m", kind="data", window_size=10, retrain=True, producer="t")
    poison_drifts = [
        json.dumps({**drift.model_dump(mode="json"), "model_name": "x" * 10_000}).encode(),
        DriftDetected(
            dataset="no-such-dataset", model_name="no-such-model", kind="data", window_size=10, retrain=True
        ).to_bytes(),
    ]
    async with TestKafkaBroker(broker) as test_broker:
        for value in [*poison_requests, request.to_bytes()]:
            await test_broker.publish(value, TRAINING_REQUESTED.name)
        for value in poison_drifts:
            await test_broker.publish(value, MONITORING_DRIFT.name)
        await test_broker.publish(drift.to_bytes(), MONITORING_DRIFT.name)
    dead = {(d["source_topic"], base64.b64decode(d["original_value"])): d["reason"] for d in letters}
    sent = {(MONITORING_DRIFT.name, v) for v in poison_drifts} | {(TRAINING_REQUESTED.name, v) for v in poison_requests}
    assert set(dead) == sent and len(letters) == len(sent) and all(dead.values())
    assert "no-such-dataset" in dead[(MONITORING_DRIFT.name, poison_drifts[1])]
    assert [r.trigger for r in coalescer.submitted] == ["api", "drift"]  # the request, then the drift's retrain
    # the in-memory broker gives every message offset 0: the first bad one was committed past at once
    assert committed == [{0: 1}]


async def test_a_version_of_an_unknown_dataset_is_dead_lettered_and_wakes_nothing():
    arrivals = Arrivals()
    broker, _, _ = await wired(arrivals)
    letters: list[dict] = []

    @broker.subscriber(DEADLETTERS.name)
    async def collect(body: dict) -> None:
        letters.append(body)

    def versioned(dataset: str, version: str = "v") -> DatasetVersioned:
        manifest = DatasetManifest(dataset=dataset, version=version, content_hash="h", row_count=1, columns={}, uri="")
        return DatasetVersioned(dataset=dataset, version=version, manifest=manifest, producer="t")

    good = versioned("loans")
    poison = [
        versioned("no-such-dataset").to_bytes(),
        json.dumps({**good.model_dump(mode="json"), "version": "x" * 10_000}).encode(),
        json.dumps(
            {**good.model_dump(mode="json"), "manifest": {**good.manifest.model_dump(), "row_count": 1e308}}
        ).encode(),
    ]
    async with TestKafkaBroker(broker) as test_broker:
        for value in [good.to_bytes(), *poison, versioned("loans", "v2").to_bytes()]:
            await test_broker.publish(value, DATASETS_VERSIONED.name)
    assert arrivals.heard == {"loans": 2}
    assert [base64.b64decode(d["original_value"]) for d in letters] == poison and all(d["reason"] for d in letters)
