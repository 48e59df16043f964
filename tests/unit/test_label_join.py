"""The one join of predictions and labels (``flywheel.monitoring.join``), in memory."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from flywheel.monitoring.join import LabelJoin
from flywheel.schemas import LabelObserved, PredictionMade

AT = datetime(2026, 1, 1, tzinfo=UTC)


def answer(i: int, entity: str = "e", served: bool = True, at: datetime = AT) -> PredictionMade:
    return PredictionMade(
        producer="serving",
        dataset="loans",
        prediction_id=f"p{i}" + ("" if served else "s"),
        request_id=f"r{i}",
        entity_id=entity,
        model_name="m",
        model_version="1" if served else "2",
        variant="champion" if served else "shadow",
        served=served,
        prediction=1,
        latency_ms=1.0,
        occurred_at=at,
    )


def label(**names) -> LabelObserved:
    return LabelObserved(producer="t", dataset="loans", label=1, **names)


def test_a_label_naming_only_its_entity_waits_for_the_entitys_next_served_answer() -> None:
    join = LabelJoin()
    assert join.join(label(entity_id="e")) is None
    assert join.remember(answer(1, served=False)) == []  # a shadow: not the answer it waits for
    [joined] = join.remember(answer(1))
    assert [a.prediction_id for a in joined.answers] == ["p1", "p1s"]


def test_a_label_observed_before_the_answer_that_arrives_does_not_judge_it() -> None:
    join = LabelJoin()
    assert join.join(label(entity_id="e", observed_at=AT)) is None
    assert join.remember(answer(1, at=AT + timedelta(seconds=5))) == []
    assert join.join(label(entity_id="e")).answers[0].prediction_id == "p1"  # a later label judges it


def test_the_same_label_id_twice_and_a_label_for_an_answer_joined_already_join_nothing() -> None:
    join = LabelJoin()
    join.remember(answer(1))
    first = label(prediction_id="p1", entity_id="e")
    assert join.join(first) is not None
    assert join.join(first) is None and join.join(label(prediction_id="p1")) is None
    assert join.joined == 1


def test_the_joined_event_id_derives_from_the_label() -> None:
    a, b = LabelJoin(), LabelJoin()
    first = label(prediction_id="p1")
    for join in (a, b):
        join.remember(answer(1))
    assert a.join(first).event_id == b.join(first).event_id != first.event_id


def test_waiting_labels_expire_and_memory_is_bounded() -> None:
    join = LabelJoin(capacity=2, wait_s=10)
    assert join.join(label(prediction_id="p9"), now=0.0) is None
    join.remember(answer(1, entity="a"), now=11.0)  # the wait of p9's label is over
    assert (join.waiting, join.given_up) == (0, 1)
    assert join.remember(answer(9, entity="b"), now=12.0) == []
    join.remember(answer(2, entity="c"), now=12.0)
    assert join.held == 2 and join.join(label(prediction_id="p1")) is None  # the oldest answer was let go
