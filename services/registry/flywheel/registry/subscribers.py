"""Registry's Kafka side: finished training runs are gated; rollouts serving rolled back are written down."""

from __future__ import annotations

from faststream.kafka import KafkaBroker

from flywheel.common.kafka import ExactlyOnce, exactly_once, subscription
from flywheel.registry.registrar import Registrar
from flywheel.schemas import MODELS_ROLLOUT, TRAINING_COMPLETED, Event, ModelTrained, RolloutStepped


def register_subscribers(broker: KafkaBroker, registrar: Registrar, once: ExactlyOnce, group: str) -> None:
    @broker.subscriber(TRAINING_COMPLETED.name, **subscription(TRAINING_COMPLETED, group))
    @exactly_once(broker, once)
    async def on_model_trained(trained: ModelTrained) -> list[Event]:
        """Gate a candidate; register it approved (challenger or first champion) or rejected.

        A repeat (an earlier identical run answered the request) trained nothing: it was gated
        when it was new, and is not registered, approved or rolled out again.
        """
        if trained.repeat:
            return []
        return await registrar.on_trained(trained)

    @broker.subscriber(MODELS_ROLLOUT.name, **subscription(MODELS_ROLLOUT, group))
    @exactly_once(broker, once)
    async def on_rollout_stepped(rollout: RolloutStepped) -> list[Event]:
        """A rollout that ended with the champion kept (rolled back, inconclusive, aborted): its candidate loses
        ``challenger`` and is marked so, with why; other steps pass."""
        return await registrar.on_rollout(rollout)
