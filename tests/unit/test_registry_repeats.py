"""The registry's subscriber on the in-memory broker: a repeat (an identical earlier run) is never gated again."""

from __future__ import annotations

from faststream.kafka import TestKafkaBroker

from flywheel.common.kafka import ExactlyOnce, create_broker
from flywheel.common.settings import KafkaSettings
from flywheel.registry.commanded import CommandHandler
from flywheel.registry.commands import CommandDesk
from flywheel.registry.subscribers import register_subscribers
from flywheel.schemas import TRAINING_COMPLETED, Lineage, ModelTrained


class Registrar:
    """Records the candidates it is asked to gate."""

    store = None

    def __init__(self) -> None:
        self.gated: list[ModelTrained] = []

    async def on_trained(self, trained: ModelTrained) -> list:
        self.gated.append(trained)
        return []


def trained(repeat: bool) -> ModelTrained:
    return ModelTrained(
        model_name="m",
        run_id="run-1",
        model_uri="models:/m-1",
        metrics={"accuracy": 0.9},
        lineage=Lineage(dataset="loans", dataset_version="v1", code_version="c", model_spec="model", seed=1),
        duration_s=0.1,
        repeat=repeat,
        producer="training",
    )


async def test_a_repeat_is_not_gated_registered_or_approved_again() -> None:
    broker = create_broker(KafkaSettings(retry_backoff_s=0), service="registry-test")
    registrar = Registrar()
    desk = CommandDesk(broker, 5, secret="s")
    register_subscribers(broker, registrar, CommandHandler(registrar, "s"), desk, ExactlyOnce(), "registry-test")  # type: ignore[arg-type]
    first, again = trained(repeat=False), trained(repeat=True)
    async with TestKafkaBroker(broker) as test_broker:
        await test_broker.publish(first.to_bytes(), TRAINING_COMPLETED.name)
        await test_broker.publish(again.to_bytes(), TRAINING_COMPLETED.name)
    assert [t.event_id for t in registrar.gated] == [first.event_id]
