"""The flywheel command without a stack: help with examples, refusals and failures as one line."""

import json

import pytest
from typer.testing import CliRunner

from flywheel.cli.events import prepare
from flywheel.cli.filters import FilterError, matches, parse_filters
from flywheel.cli.main import app
from flywheel.schemas import ALERTS, RECORDS_RAW, TRAINING_REQUESTED, RecordSubmitted

COMMANDS = [
    ["status"],
    ["topics"],
    ["publish"],
    ["tail"],
    ["lineage"],
    ["why"],
    ["train"],
    ["promote"],
    ["rollback"],
    ["approve"],
    ["rollout", "status"],
]
NOWHERE = "http://127.0.0.1:1"


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def nowhere(monkeypatch):
    """A deployment whose every component refuses connections."""
    for service in ("ingestion", "features", "training", "registry", "serving", "monitoring"):
        monkeypatch.setenv(f"FLYWHEEL_{service.upper()}_URL", NOWHERE)
    monkeypatch.setenv("FLYWHEEL_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    monkeypatch.setenv("FLYWHEEL_S3_ENDPOINT_URL", NOWHERE)
    monkeypatch.setenv("FLYWHEEL_MLFLOW_TRACKING_URI", NOWHERE)
    monkeypatch.setenv("FLYWHEEL_HTTP_TIMEOUT_S", "2")


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c))
def test_every_command_has_help_with_an_example(runner, command):
    result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "Example" in result.output
    assert f"flywheel {' '.join(command)}" in result.output


@pytest.mark.parametrize(
    "command",
    [
        ["lineage", "loans-approval", "3"],
        ["train", "loans"],
        ["promote", "loans-approval", "3", "--reason", "better"],
        ["rollback", "loans-approval", "--reason", "worse"],
        ["rollout", "status"],
    ],
    ids=lambda c: c[0],
)
def test_unreachable_service_fails_with_one_line_and_no_traceback(runner, nowhere, command):
    result = runner.invoke(app, command)
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot reach"), result.output
    assert "Traceback" not in result.output


def test_status_of_an_unreachable_deployment_says_what_is_down_and_exits_non_zero(runner, nowhere):
    result = runner.invoke(app, ["status", "--json"])
    assert result.exit_code == 1
    body = json.loads(result.stdout)
    assert body["healthy"] is False
    assert {c["health"] for c in body["components"].values()} == {"unreachable"}
    assert "error: not healthy: kafka, minio, mlflow, ingestion" in result.stderr


def test_publish_refuses_invalid_lines_naming_line_and_field_and_sends_nothing(runner, nowhere):
    lines = [
        json.dumps({"dataset": "loans", "record_id": "r1", "data": {"age": 30}}),
        json.dumps({"dataset": "loans", "data": {"age": 30}}),
        "not json",
        json.dumps({"dataset": "loans", "record_id": "r3", "data": "oops"}),
    ]
    result = runner.invoke(app, ["publish", "records.raw", "-"], input="\n".join(lines))
    assert result.exit_code == 1
    assert "line 2: record_id: Field required" in result.stderr
    assert "line 3: not JSON" in result.stderr
    assert "line 4: data: Input should be a valid dictionary" in result.stderr
    assert "refused 3 of 4 items (RecordSubmitted on records.raw); nothing sent" in result.stderr
    assert "cannot reach" not in result.stderr  # refused before any connection


def test_publish_to_an_unknown_topic_is_refused(runner):
    result = runner.invoke(app, ["publish", "records.cooked", "-"], input="{}")
    assert result.exit_code == 1
    assert "no topic 'records.cooked' in the catalogue" in result.stderr


def test_publish_with_kafka_down_fails_with_one_line(runner, nowhere):
    record = {"dataset": "loans", "record_id": "r1", "data": {"age": 30}}
    result = runner.invoke(app, ["publish", "records.raw", "-"], input=json.dumps(record))
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: cannot reach Kafka at 127.0.0.1:1"
    assert "Traceback" not in result.output


@pytest.mark.parametrize("command", [["topics"], ["tail", "alerts"]], ids=lambda c: c[0])
def test_kafka_commands_with_kafka_down_fail_with_one_line(runner, nowhere, command):
    result = runner.invoke(app, command)
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: cannot reach Kafka at 127.0.0.1:1"


def test_tail_refuses_a_filter_it_cannot_parse(runner):
    result = runner.invoke(app, ["tail", "alerts", "--filter", "severity"])
    assert result.exit_code == 1
    assert "expected PATH OP VALUE" in result.stderr


def test_a_payload_is_wrapped_in_a_fresh_envelope_and_a_full_event_kept_as_it_is():
    full = RecordSubmitted(producer="loader", dataset="loans", record_id="r9", data={"age": 50})
    text = "\n".join([full.model_dump_json(), json.dumps({"dataset": "loans", "record_id": "r1", "data": {}})])
    batch = prepare(RECORDS_RAW, text)
    assert batch.problems == []
    kept, wrapped = batch.events
    assert kept == full
    assert wrapped.producer == "cli" and wrapped.causation_id is None
    assert wrapped.event_id != kept.event_id and wrapped.correlation_id != kept.correlation_id


def test_a_full_event_of_another_type_is_refused():
    alert = ALERTS.event(severity="info", kind="x", message="m", dedup_key="k")
    batch = prepare(TRAINING_REQUESTED, alert.model_dump_json())
    assert batch.events == []
    assert any("AlertRaised" in p.message for p in batch.problems)


def test_an_array_is_numbered_by_item():
    batch = prepare(RECORDS_RAW, json.dumps([{"dataset": "loans", "record_id": "r1", "data": {}}, {"dataset": 1}]))
    assert len(batch.events) == 1
    assert {str(p).split(":")[0] for p in batch.problems} == {"line 2"}


def test_filters_combine_with_and_over_dotted_paths_and_lists():
    event = {"severity": "warning", "evidence": {"psi": 0.12}, "features": [{"feature": "age", "drifted": True}]}
    assert matches(parse_filters(["features.feature=age", "features.drifted=true"]), event)
    assert matches(parse_filters(["evidence.psi>=0.12", "severity!=critical", "severity!~crit"]), event)
    assert not matches(parse_filters(["features.feature=salary"]), event)
    assert not matches(parse_filters(["evidence.psi<0.1"]), event)
    assert not matches(parse_filters(["missing.path=1"]), event)
    with pytest.raises(FilterError, match="needs a number"):
        parse_filters(["evidence.psi>high"])
