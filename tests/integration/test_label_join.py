"""The one join of predictions and labels, on the real stack: monitoring's consumer of both topics
publishes each label joined once to the answers given for it (``predictions.labelled``)."""

from __future__ import annotations

import contextlib
import uuid

import pytest

from flywheel.common.settings import KafkaSettings
from flywheel.schemas import PREDICTIONS_LABELLED, LabelObserved, PredictionMade
from tests.support.kafka import TopicReader, producer, send_event

pytestmark = [pytest.mark.usefixtures("topics"), pytest.mark.timeout(120)]


def answer(tag: str, i: int, shadow: bool = False) -> PredictionMade:
    return PredictionMade(
        producer="integration",
        dataset="loans",  # a dataset with a contract; the model is this test's alone
        prediction_id=f"{tag}-{i}" + ("s" if shadow else ""),
        request_id=f"{tag}-r{i}",
        entity_id=f"{tag}-e{i}",
        model_name=tag,
        model_version="2" if shadow else "1",
        variant="shadow" if shadow else "champion",
        served=not shadow,
        prediction=(i + shadow) % 2,
        features={"salary": 20_000.0 + i},
        latency_ms=1.0,
    )


def label(tag: str, i: int, by_prediction: bool = True) -> LabelObserved:
    """The outcome of request ``i`` (1 for even i), keyed by its entity; naming its prediction, or only the entity."""
    return LabelObserved(
        producer="integration",
        dataset="loans",
        label=int(i % 2 == 0),
        entity_id=f"{tag}-e{i}",
        prediction_id=f"{tag}-{i}" if by_prediction else None,
    )


async def test_each_label_is_joined_once_to_the_served_answer_and_its_shadow(kafka: KafkaSettings) -> None:
    tag = f"join-{uuid.uuid4().hex[:8]}"
    early = [label(tag, i) for i in range(20, 25)]  # sent before their predictions: they wait for them
    named = [label(tag, i) for i in range(10)]
    by_entity = [label(tag, i, by_prediction=False) for i in range(10, 20)]
    unknown = LabelObserved(producer="integration", dataset="loans", label=1, prediction_id=f"{tag}-never")
    # as serving logs them: a request's shadow answer before its served one
    answers = [a for i in range(30) for a in ([answer(tag, i, shadow=True)] if i % 2 == 0 else []) + [answer(tag, i)]]
    async with TopicReader(kafka.bootstrap_servers, PREDICTIONS_LABELLED.name) as reader:
        send = await producer(kafka.bootstrap_servers)
        try:
            for event in [*early, *answers, *named, *by_entity, unknown, *named[:3]]:  # the last three: again
                await send_event(send, event)
        finally:
            await send.stop()
        ours = lambda body: body.get("model_name") == tag  # noqa: E731
        await reader.collect(lambda seen: len(seen) >= 25, where=ours)
        with contextlib.suppress(AssertionError):  # anything more (a label joined twice) would come right behind
            await reader.collect(lambda seen: len(seen) > 25, timeout=3, where=ours)
        joined = reader.seen

    by_label = {b["label_event_id"]: b for b in joined}
    sent = {str(e.event_id): e for e in [*early, *named, *by_entity]}
    assert len(joined) == 25 and set(by_label) == set(sent), "each label joined once, the unknown one not at all"
    assert len({b["event_id"] for b in joined}) == 25
    for event_id, body in by_label.items():
        i = int(body["request_id"].rsplit("-r", 1)[1])
        assert body["label"] == sent[event_id].label and body["entity_id"] == f"{tag}-e{i}"
        served = [a for a in body["answers"] if a["served"]]
        assert [(a["prediction_id"], a["model_version"]) for a in served] == [(f"{tag}-{i}", "1")]
        shadows = [(a["prediction_id"], a["variant"], a["model_version"]) for a in body["answers"] if not a["served"]]
        assert shadows == ([(f"{tag}-{i}s", "shadow", "2")] if i % 2 == 0 else []), body
