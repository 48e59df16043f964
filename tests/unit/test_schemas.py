"""The event contract: envelope rules, exported JSON Schema, and backward compatibility."""

import json
from uuid import uuid4

import pytest
from pydantic import ValidationError

from flywheel.schemas import EVENT_TYPES, TOPICS, RecordSubmitted, TrainModel, topic_for
from flywheel.schemas.compatibility import breaking_changes
from flywheel.schemas.export import SCHEMA_DIR, json_schema, render, schema_path

RELEASED_DIR = SCHEMA_DIR.parent / "released"


def test_every_topic_carries_a_distinct_event_type():
    assert len({t.event for t in TOPICS.values()}) == len(TOPICS)
    for topic in TOPICS.values():
        assert topic_for(topic.event) is topic
        assert set(topic.key_fields) <= set(topic.event.model_fields), f"{topic.name} is keyed by a missing field"


def test_envelope_is_stamped_with_type_and_version():
    event = RecordSubmitted(dataset="loans", record_id="r1", data={"age": 30}, producer="test")
    wire = json.loads(event.to_bytes())
    assert wire["event_type"] == "RecordSubmitted"
    assert wire["schema_version"] == "1.0"
    assert wire["occurred_at"].endswith("Z")
    assert set(wire) >= {"event_id", "producer", "correlation_id", "causation_id"}


def test_caused_event_shares_the_loop_and_names_its_cause():
    cause = RecordSubmitted(dataset="loans", record_id="r1", data={}, producer="test")
    effect = TrainModel(model_name="m", dataset="loans", producer="test", **cause.caused())
    assert effect.correlation_id == cause.correlation_id
    assert effect.causation_id == cause.event_id


def test_wrong_event_type_or_major_version_is_refused():
    base = {"dataset": "loans", "record_id": "r1", "data": {}, "event_id": str(uuid4())}
    with pytest.raises(ValidationError, match="event_type"):
        RecordSubmitted.model_validate({**base, "event_type": "TrainModel"})
    with pytest.raises(ValidationError, match="major"):
        RecordSubmitted.model_validate({**base, "schema_version": "2.0"})
    assert RecordSubmitted.model_validate({**base, "schema_version": "1.7"}).schema_version == "1.7"


@pytest.mark.parametrize("name", sorted(EVENT_TYPES))
def test_exported_json_schema_matches_the_model(name):
    event = EVENT_TYPES[name]
    path = schema_path(event)
    assert path.exists(), f"{path.name} missing: run `make schemas`"
    assert path.read_text() == render(json_schema(event)), f"{path.name} is stale: run `make schemas`"


@pytest.mark.parametrize("name", sorted(EVENT_TYPES))
def test_schema_is_backward_compatible_with_its_last_release(name):
    event = EVENT_TYPES[name]
    released = RELEASED_DIR / schema_path(event).name
    assert released.exists(), f"{released.name} was never released: copy it to schemas/released/"
    problems = breaking_changes(json.loads(released.read_text()), json_schema(event))
    assert problems == [], f"{name} breaks its released schema: {problems}"


def test_compatibility_check_catches_a_removed_and_a_new_required_field():
    released = json_schema(TrainModel)
    changed = json.loads(json.dumps(released))
    del changed["properties"]["reason"]
    changed["properties"]["priority"] = {"type": "integer"}
    changed["required"] = [*changed.get("required", []), "priority"]
    assert breaking_changes(released, changed) == ["priority: new required field", "reason: field removed"]


def test_compatibility_allows_a_new_optional_field_and_int_to_float():
    released = {"properties": {"n": {"type": "integer"}}, "required": ["n"]}
    newer = {"properties": {"n": {"type": "number"}, "note": {"type": "string"}}, "required": ["n"]}
    assert breaking_changes(released, newer) == []
