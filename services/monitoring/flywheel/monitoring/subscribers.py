"""Monitoring's Kafka side: predictions, labels and champion changes in; drift and alerts out."""

from __future__ import annotations

from faststream.kafka import KafkaBroker

from flywheel.common.kafka import ExactlyOnce, consumer_options, exactly_once
from flywheel.monitoring.watch import Watch
from flywheel.schemas import (
    LABELS,
    MODELS_CHAMPION,
    PREDICTIONS,
    ChampionChanged,
    Event,
    LabelObserved,
    PredictionMade,
)


def register_subscribers(broker: KafkaBroker, watch: Watch, once: ExactlyOnce | None = None) -> None:
    once = once or ExactlyOnce()

    @broker.subscriber(PREDICTIONS.name, **consumer_options("monitoring"))
    @exactly_once(broker, once)
    async def on_prediction_made(prediction: PredictionMade) -> list[Event]:
        """Add a served prediction to its model's window; publish drift and alerts it reveals."""
        return await watch.on_prediction(prediction)

    @broker.subscriber(LABELS.name, **consumer_options("monitoring"))
    @exactly_once(broker, once)
    async def on_label_observed(label: LabelObserved) -> list[Event]:
        """Join a late label to its prediction; publish concept drift and accuracy alerts."""
        return await watch.on_label(label)

    @broker.subscriber(MODELS_CHAMPION.name, **consumer_options("monitoring"))
    async def on_champion_changed(change: ChampionChanged) -> None:
        """Judge traffic against the new champion's training data from now on."""
        await watch.on_champion_changed(change)
