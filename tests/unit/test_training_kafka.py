"""Training's subscribers on the in-memory broker: drift to request, dedup of requests."""

from faststream.kafka import TestKafkaBroker

from flywheel.common.kafka import SeenEvents, create_broker
from flywheel.common.settings import KafkaSettings
from flywheel.schemas import MONITORING_DRIFT, TRAINING_REQUESTED, DriftDetected, TrainModel
from flywheel.training.subscribers import register_subscribers


class FakeCoalescer:
    def __init__(self) -> None:
        self.submitted: list[TrainModel] = []

    def submit(self, request: TrainModel) -> None:
        self.submitted.append(request)


def wired():
    broker = create_broker(KafkaSettings(retry_backoff_s=0), service="training-test")
    coalescer = FakeCoalescer()
    register_subscribers(broker, coalescer, SeenEvents(), "training-test")
    return broker, coalescer


async def test_a_retrain_drift_publishes_a_train_command_that_reaches_the_coalescer():
    broker, coalescer = wired()
    drift = DriftDetected(dataset="loans", model_name="m", kind="data", window_size=10, retrain=True, producer="t")
    async with TestKafkaBroker(broker) as test_broker:
        await test_broker.publish(drift.to_bytes(), MONITORING_DRIFT.name)
        await test_broker.publish(drift.to_bytes(), MONITORING_DRIFT.name)  # redelivered
    assert len(coalescer.submitted) == 1
    [request] = coalescer.submitted
    assert request.causation_id == drift.event_id and request.trigger == "drift"


async def test_drift_without_retrain_requests_nothing_and_duplicate_requests_are_dropped():
    broker, coalescer = wired()
    drift = DriftDetected(dataset="loans", model_name="m", kind="data", window_size=10, retrain=False, producer="t")
    request = TrainModel(model_name="m", dataset="loans", producer="t")
    async with TestKafkaBroker(broker) as test_broker:
        await test_broker.publish(drift.to_bytes(), MONITORING_DRIFT.name)
        for _ in range(3):
            await test_broker.publish(request.to_bytes(), TRAINING_REQUESTED.name)
    assert [r.event_id for r in coalescer.submitted] == [request.event_id]
