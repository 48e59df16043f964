"""Monitoring's Kafka side: predictions, labels and champion changes in; drift and alerts out."""

from __future__ import annotations

from faststream.kafka import KafkaBroker

from flywheel.common.kafka import SeenEvents, consumer_options, publish_event
from flywheel.monitoring.watch import Watch
from flywheel.schemas import LABELS, MODELS_CHAMPION, PREDICTIONS, ChampionChanged, LabelObserved, PredictionMade


def register_subscribers(broker: KafkaBroker, watch: Watch) -> None:
    seen = SeenEvents()

    @broker.subscriber(PREDICTIONS.name, **consumer_options("monitoring"))
    async def on_prediction_made(prediction: PredictionMade) -> None:
        """Add a served prediction to its model's window; publish drift and alerts it reveals."""
        if seen.first_time(prediction.event_id):
            for event in await watch.on_prediction(prediction):
                await publish_event(broker, event)

    @broker.subscriber(LABELS.name, **consumer_options("monitoring"))
    async def on_label_observed(label: LabelObserved) -> None:
        """Join a late label to its prediction; publish concept drift and accuracy alerts."""
        if seen.first_time(label.event_id):
            for event in await watch.on_label(label):
                await publish_event(broker, event)

    @broker.subscriber(MODELS_CHAMPION.name, **consumer_options("monitoring"))
    async def on_champion_changed(change: ChampionChanged) -> None:
        """Judge traffic against the new champion's training data from now on."""
        await watch.on_champion_changed(change)
