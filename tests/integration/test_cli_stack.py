"""The flywheel command against the real stack: publish, tail, topics, status."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.integration

FLYWHEEL = Path(sys.executable).parent / "flywheel"


def run(
    *args: str, input: str | None = None, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, **(env or {})}
    return subprocess.run(
        [str(FLYWHEEL), *args], input=input, capture_output=True, text=True, timeout=timeout, env=environ
    )


class Tail:
    """`flywheel tail ... -f --json` in the background, ready once it says where it reads from."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [str(FLYWHEEL), "tail", *args, "--follow", "--last", "0", "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        ready = self.process.stderr.readline()
        if not ready.startswith("reading"):
            self.process.kill()
            raise AssertionError(f"tail did not start: {ready}{self.process.stderr.read()}")

    def events(self, timeout: float = 45) -> list[dict]:
        """Wait for the tail to end (it stops after --max events) and parse what it printed."""
        timer = threading.Timer(timeout, self.process.kill)
        timer.start()
        try:
            stdout, stderr = self.process.communicate()
        finally:
            timer.cancel()
        assert self.process.returncode == 0, f"tail ended {self.process.returncode}: {stderr}"
        return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def loan_record(record_id: str, age: int = 41) -> dict:
    return {
        "dataset": "loans",
        "record_id": record_id,
        "data": {
            "applicant_id": f"applicant-{record_id}",
            "applied_at": "2026-11-23T00:00:00Z",
            "salary": 72000.0,
            "commission": 5000.0,
            "age": age,
            "elevel": 2,
            "car": 5,
            "zipcode": 3,
            "hvalue": 150000.0,
            "hyears": 12,
            "loan": 120000.0,
            "approved": None,
        },
    }


def test_a_file_of_raw_records_published_with_the_cli_comes_out_validated_on_tail(tmp_path, kafka, topics, services):
    run_id = uuid.uuid4().hex[:8]
    records = [loan_record(f"cli-{run_id}-{i}") for i in range(25)]
    path = tmp_path / "records.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")

    tail = Tail("records.validated", "--filter", f"record_id~cli-{run_id}-", "--max", "25")
    sent = run("publish", "records.raw", str(path))
    assert sent.returncode == 0, sent.stderr
    assert "sent 25 RecordSubmitted to records.raw" in sent.stderr

    validated = tail.events()
    assert sorted(e["record_id"] for e in validated) == sorted(r["record_id"] for r in records)
    assert {e["event_type"] for e in validated} == {"RecordValidated"}
    assert {e["entity_id"] for e in validated} == {r["data"]["applicant_id"] for r in records}


def test_a_record_that_breaks_its_contract_is_tailed_on_rejected_with_a_filter_on_its_violations(
    kafka, topics, services
):
    record_id = f"cli-bad-{uuid.uuid4().hex[:8]}"
    tail = Tail(
        "records.rejected", "--filter", f"record_id={record_id}", "--filter", "violations.column=age", "--max", "1"
    )
    sent = run("publish", "records.raw", "-", input=json.dumps(loan_record(record_id, age=150)))
    assert sent.returncode == 0, sent.stderr

    (rejected,) = tail.events()
    assert rejected["event_type"] == "RecordRejected"
    assert any(v["column"] == "age" and v["rule"] == "range" for v in rejected["violations"])


def test_an_operator_subscribed_to_alerts_sees_a_published_alert(kafka, topics):
    dedup_key = f"cli-test-{uuid.uuid4().hex[:8]}"
    tail = Tail("alerts", "--filter", f"dedup_key={dedup_key}", "--filter", "severity=critical", "--max", "1")
    alert = {"severity": "critical", "kind": "cli_test", "message": "raised by the CLI test", "dedup_key": dedup_key}
    sent = run("publish", "alerts", "-", input=json.dumps(alert))
    assert sent.returncode == 0, sent.stderr

    (seen,) = tail.events()
    assert seen["event_type"] == "AlertRaised"
    assert seen["producer"] == "cli"
    assert seen["message"] == "raised by the CLI test"


def test_tail_without_follow_prints_the_last_events_and_ends(kafka, topics):
    dedup_key = f"cli-last-{uuid.uuid4().hex[:8]}"
    sent = run(
        "publish",
        "alerts",
        "-",
        input=json.dumps({"severity": "info", "kind": "t", "message": "m", "dedup_key": dedup_key}),
    )
    assert sent.returncode == 0, sent.stderr
    shown = run("tail", "alerts", "--last", "5", "--json", "--filter", f"dedup_key={dedup_key}")
    assert shown.returncode == 0, shown.stderr
    assert [json.loads(line)["dedup_key"] for line in shown.stdout.splitlines()] == [dedup_key]
    pretty = run("tail", "alerts", "--last", "5", "--filter", f"dedup_key={dedup_key}")
    assert "AlertRaised INFO" in pretty.stdout and dedup_key in pretty.stdout

    # Without --follow a tail is a snapshot: at most --last per partition, even while events keep coming.
    partitions = {row["topic"]: row["partitions"] for row in json.loads(run("topics", "--json").stdout)}
    stop = threading.Event()
    flooding = threading.Thread(target=flood_alerts, args=(kafka, stop), daemon=True)
    flooding.start()
    try:
        last_one = run("tail", "alerts", "--last", "1", "--json")
    finally:
        stop.set()
        flooding.join(timeout=30)
    assert last_one.returncode == 0, last_one.stderr
    assert 1 <= len(last_one.stdout.splitlines()) <= partitions["alerts"], last_one.stdout[:2000]


def flood_alerts(kafka, stop: threading.Event) -> None:
    """Publish info alerts in small batches until told to stop."""
    import asyncio

    from flywheel.cli.kafka import send
    from flywheel.schemas import ALERTS

    async def loop() -> None:
        while not stop.is_set():
            events = [
                ALERTS.event(producer="cli-test", severity="info", kind="t", message="m", dedup_key=f"flood-{i}")
                for i in range(20)
            ]
            await send(kafka, ALERTS, events)

    asyncio.run(loop())


def test_topics_counts_messages_from_kafka_offsets(kafka, topics):
    def count() -> int:
        listed = run("topics", "--json")
        assert listed.returncode == 0, listed.stderr
        rows = {row["topic"]: row for row in json.loads(listed.stdout)}
        assert rows["records.raw"]["event_type"] == "RecordSubmitted" and rows["records.raw"]["key"] == "record_id"
        assert rows["alerts"]["partitions"] >= 1
        return rows["alerts"]["messages"]

    before = count()
    lines = [json.dumps({"severity": "info", "kind": "t", "message": "m", "dedup_key": f"k{i}"}) for i in range(3)]
    assert run("publish", "alerts", "-", input="\n".join(lines)).returncode == 0
    assert count() >= before + 3


def test_status_reports_every_component_of_the_running_stack(kafka, topics):
    shown = run("status", "--json")
    body = json.loads(shown.stdout)
    components = body["components"]
    assert set(components) == {
        "kafka",
        "minio",
        "mlflow",
        "ingestion",
        "features",
        "training",
        "registry",
        "serving",
        "monitoring",
    }
    assert components["kafka"]["health"] == "ok"
    assert components["minio"]["health"] == "ok"
    assert components["mlflow"]["health"] == "ok" and components["mlflow"]["version"]
    assert components["ingestion"]["version"]
    assert shown.returncode == (0 if body["healthy"] else 1)


def test_every_dashboard_query_names_a_metric_the_running_services_serve_on_metrics(services):
    from prometheus_client.parser import text_string_to_metric_families

    from tests.unit.test_dashboard_metrics import DASHBOARDS, SUFFIXES, metric_names, targets

    served: set[str] = set()
    for name, url in services.items():
        response = httpx.get(f"{url}/metrics", timeout=10)
        assert response.status_code == 200, f"{name}: GET /metrics answered {response.status_code}"
        for family in text_string_to_metric_families(response.text):
            served.update(f"{family.name}{suffix}" for suffix in SUFFIXES.get(family.type, ("",)))
            served.update(sample.name for sample in family.samples)
    assert "flywheel_serving_predictions_total" in served
    for path in DASHBOARDS:
        unknown = {
            title: sorted(metric_names(expr) - served)
            for title, expr in targets(json.loads(path.read_text()))
            if metric_names(expr) - served
        }
        assert unknown == {}, f"{path.name}: panels query metrics the live services do not serve: {unknown}"


def test_unknown_topic_and_unreachable_services_are_one_line_failures(kafka):
    unknown = run("tail", "records.cooked")
    assert unknown.returncode == 1
    assert unknown.stderr.strip() == "error: no topic 'records.cooked' in the catalogue; `flywheel topics` lists them"
    down = run("status", env={"FLYWHEEL_SERVING_URL": "http://127.0.0.1:1"})
    assert down.returncode == 1
    assert down.stderr.strip().splitlines()[-1] == "error: not healthy: serving"
