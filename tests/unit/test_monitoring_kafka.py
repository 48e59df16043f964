"""Monitoring's subscribers on the in-memory broker: labels in, drift and alerts out."""

import base64
import json
import uuid
from pathlib import Path

import numpy as np
from faststream.kafka import TestKafkaBroker

from flywheel.common.championmoves import ChampionMoves
from flywheel.common.contracts import load_contracts
from flywheel.common.kafka import DEADLETTERS, create_broker
from flywheel.common.settings import KafkaSettings
from flywheel.monitoring.monitor import MonitorConfig, Reference
from flywheel.monitoring.subscribers import register_subscribers
from flywheel.monitoring.watch import Watch
from flywheel.schemas import (
    ALERTS,
    LABELS,
    MODELS_CHAMPION,
    MODELS_ROLLOUT,
    MONITORING_DRIFT,
    PREDICTIONS,
    AlertRaised,
    ChampionChanged,
    DriftDetected,
    LabelObserved,
    PredictionMade,
    RolloutStepped,
)

CONTRACTS = load_contracts(Path(__file__).resolve().parents[2] / "datasets")


async def only_model_m(name: str, version: str) -> bool:
    """The registry of these tests: model ``m`` and its versions, nothing else."""
    return name == "m"


async def champion_of_m(name: str) -> str | None:
    """The registry's champion of ``m`` in these tests: version 1."""
    return "1" if name == "m" else None


KNOWN = {"contracts": CONTRACTS, "registered": only_model_m, "moves": ChampionMoves(champion_of_m, only_model_m)}


def reference() -> Reference:
    rng = np.random.default_rng(0)
    return Reference(
        model_name="m",
        model_version="1",
        dataset="loans",
        dataset_version="v1",
        features={"x": rng.normal(size=2000)},
        categorical=set(),
        train_accuracy=0.95,
    )


async def test_a_model_that_turns_wrong_leads_to_a_concept_drift_event_and_one_alert():
    broker = create_broker(KafkaSettings(retry_backoff_s=0), service="monitoring-test")
    register_subscribers(broker, Watch(MonitorConfig(), lambda name: reference()), **KNOWN)
    drifts, alerts = [], []

    @broker.subscriber(MONITORING_DRIFT.name)
    async def collect_drift(body: dict) -> None:
        drifts.append(DriftDetected.model_validate(body))

    @broker.subscriber(ALERTS.name)
    async def collect_alert(body: dict) -> None:
        alerts.append(AlertRaised.model_validate(body))

    rng = np.random.default_rng(1)
    async with TestKafkaBroker(broker) as test_broker:
        for i in range(600):
            prediction = PredictionMade(
                producer="serving",
                dataset="loans",
                prediction_id=str(uuid.uuid4()),
                model_name="m",
                model_version="1",
                variant="champion",
                prediction=1,
                features={"x": float(rng.normal())},
                latency_ms=1.0,
            )
            await test_broker.publish(prediction.to_bytes(), PREDICTIONS.name)
            wrong = rng.random() < (0.05 if i < 400 else 0.6)
            label = LabelObserved(
                producer="t", dataset="loans", label=0 if wrong else 1, prediction_id=prediction.prediction_id
            )
            await test_broker.publish(label.to_bytes(), LABELS.name)
    concept = [d for d in drifts if d.kind == "concept"]
    assert concept and concept[0].retrain and concept[0].model_version == "1"
    assert [a.kind for a in alerts].count("concept_drift") == 1
    assert not [d for d in drifts if d.kind == "data"], "the feature distribution never moved"


def prediction_of(x: float) -> PredictionMade:
    return PredictionMade(
        producer="serving",
        dataset="loans",
        prediction_id=str(uuid.uuid4()),
        model_name="m",
        model_version="1",
        variant="champion",
        prediction=1,
        features={"x": x},
        latency_ms=1.0,
    )


async def test_a_transient_failure_is_retried_and_the_prediction_counted_once():
    broker = create_broker(KafkaSettings(retry_backoff_s=0), service="monitoring-test")
    watch = Watch(MonitorConfig(), lambda name: reference())
    failures = iter([RuntimeError("reference store hiccup")])
    on_prediction = watch.on_prediction

    async def flaky(prediction: PredictionMade) -> list:
        if (error := next(failures, None)) is not None:
            raise error
        return await on_prediction(prediction)

    watch.on_prediction = flaky  # type: ignore[method-assign]
    register_subscribers(broker, watch, **KNOWN)
    prediction = prediction_of(0.1)
    async with TestKafkaBroker(broker) as test_broker:
        await test_broker.publish(prediction.to_bytes(), PREDICTIONS.name)
        await test_broker.publish(prediction.to_bytes(), PREDICTIONS.name)  # a redelivery
    assert watch.monitors["m"].predictions_seen == 1


async def test_a_permanent_failure_lands_on_deadletters_with_the_reason():
    broker = create_broker(KafkaSettings(retry_backoff_s=0), service="monitoring-test")
    watch = Watch(MonitorConfig(), lambda name: reference())

    async def broken(prediction: PredictionMade) -> list:
        raise RuntimeError("window corrupted")

    watch.on_prediction = broken  # type: ignore[method-assign]
    register_subscribers(broker, watch, **KNOWN)
    letters = []

    @broker.subscriber(DEADLETTERS.name)
    async def collect(body: dict) -> None:
        letters.append(body)

    async with TestKafkaBroker(broker) as test_broker:
        await test_broker.publish(prediction_of(0.2).to_bytes(), PREDICTIONS.name)
    [letter] = letters
    assert letter["source_topic"] == PREDICTIONS.name and "window corrupted" in letter["reason"]


async def test_poison_on_every_topic_monitoring_reads_is_dead_lettered_and_the_good_events_count_once():
    broker = create_broker(KafkaSettings(retry_backoff_s=0), service="monitoring-test")
    loaded: list[str] = []

    def load(name: str) -> Reference:
        loaded.append(name)
        return reference()

    watch = Watch(MonitorConfig(), load)
    register_subscribers(broker, watch, **KNOWN)
    letters: list[dict] = []

    @broker.subscriber(DEADLETTERS.name)
    async def collect(body: dict) -> None:
        letters.append(body)

    good = prediction_of(0.1)
    nan_latency = json.dumps({**good.model_dump(mode="json"), "latency_ms": float("nan")}).encode()
    poison = {
        PREDICTIONS.name: [
            nan_latency,
            good.model_copy(update={"probability": 1e308}).model_dump_json().encode(),
            json.dumps({**good.model_dump(mode="json"), "variant": "x" * 10_000}).encode(),
            prediction_of(0.1)
            .model_copy(update={"model_name": "no-such-model", "dataset": "no-such-dataset"})
            .to_bytes(),
        ],
        LABELS.name: [
            json.dumps(
                LabelObserved(dataset="loans", label=1).model_dump(mode="json") | {"label": float("nan")}
            ).encode(),
            LabelObserved(dataset="loans", label=1e308, prediction_id=good.prediction_id).to_bytes(),
            LabelObserved(dataset="loans", label="x" * 10_000, prediction_id=good.prediction_id).to_bytes(),
            LabelObserved(dataset="no-such-dataset", label=1, prediction_id=good.prediction_id).to_bytes(),
        ],
        MODELS_CHAMPION.name: [
            json.dumps({**champion("1").model_dump(mode="json"), "version": "x" * 10_000}).encode(),
            champion("1").model_copy(update={"model_name": "no-such-model"}).to_bytes(),
        ],
    }
    label = LabelObserved(dataset="loans", label=1, prediction_id=good.prediction_id)
    async with TestKafkaBroker(broker) as test_broker:
        await test_broker.publish(champion("1").to_bytes(), MODELS_CHAMPION.name)
        for _ in range(2):  # the second: a duplicate
            await test_broker.publish(good.to_bytes(), PREDICTIONS.name)
        for topic, values in poison.items():
            for value in values:
                await test_broker.publish(value, topic)
        await test_broker.publish(label.to_bytes(), LABELS.name)
        await test_broker.publish(label.to_bytes(), LABELS.name)
    dead = {(d["source_topic"], base64.b64decode(d["original_value"])): d["reason"] for d in letters}
    sent = {(topic, value) for topic, values in poison.items() for value in values}
    assert set(dead) == sent and len(letters) == len(sent), ("each poison once, with its bytes", sent - set(dead))
    assert all(dead.values())
    assert "not in the registry" in dead[(MODELS_CHAMPION.name, poison[MODELS_CHAMPION.name][1])]
    assert "no data contract" in dead[(LABELS.name, poison[LABELS.name][3])]
    monitor = watch.monitors["m"]
    assert set(watch.monitors) == {"m"} and monitor.predictions_seen == 1 and monitor.labels_joined == 1


def champion(version: str) -> ChampionChanged:
    return ChampionChanged(model_name="m", version=version, action="promote", actor="t")


async def test_a_rollout_aborted_for_a_newer_candidate_is_no_retrain_in_vain():
    """Only a candidate that ended for good lets the monitor ask again at once: one superseded by a newer
    candidate carries on in it (asking again then made every candidate abort the canary before it)."""
    ended: list[tuple[str | None, str]] = []

    class Recording(Watch):
        def on_candidate_ended(self, model_name: str, version: str | None, why: str) -> None:
            ended.append((version, why))

    broker = create_broker(KafkaSettings(retry_backoff_s=0), service="monitoring-test")
    register_subscribers(broker, Recording(MonitorConfig(), lambda name: reference()), **KNOWN)
    async with TestKafkaBroker(broker) as test_broker:
        for version, superseded_by in (("2", "3"), ("3", None)):
            aborted = RolloutStepped(
                producer="serving",
                model_name="m",
                candidate_version=version,
                champion_version="1",
                strategy="canary",
                action="aborted",
                reason=f"superseded by version {superseded_by}" if superseded_by else "candidate failed to load",
                superseded_by=superseded_by,
            )
            await test_broker.publish(aborted.model_dump(mode="json"), topic=MODELS_ROLLOUT.name)
    assert ended == [("3", "rollout aborted")]
