"""promote, rollback, lineage, train and rollout status send what the services expect and show
what they answer: checked against a small in-process HTTP server playing the services' part."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from typer.testing import CliRunner

from flywheel.cli.main import app

LINEAGE = {
    "model_name": "loans-approval",
    "version": "3",
    "dataset": "loans",
    "dataset_version": "ds-9f2c",
    "code_version": "c177173",
    "run_id": "run-42",
    "params": {"max_depth": 6},
    "metrics": {"accuracy": 0.91},
    "gates": [{"gate": "beats_champion", "passed": True}],
    "causation_chain": [{"event_type": "DriftDetected"}, {"event_type": "TrainModel"}],
}


class Recorder:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.answers: dict[tuple[str, str], tuple[int, Any]] = {}


@pytest.fixture
def fake() -> Iterator[tuple[Recorder, str]]:
    recorder = Recorder()

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            recorder.requests.append(
                {"method": self.command, "path": self.path, "body": body, "auth": self.headers.get("authorization")}
            )
            status, answer = recorder.answers.get((self.command, self.path), (404, {"detail": "Not Found"}))
            payload = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = _answer

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield recorder, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def env(fake) -> dict[str, str]:
    _, url = fake
    return {
        "FLYWHEEL_REGISTRY_URL": url,
        "FLYWHEEL_TRAINING_URL": url,
        "FLYWHEEL_SERVING_URL": url,
        "FLYWHEEL_TOKEN": "s3cret",
        "FLYWHEEL_ACTOR": "ops-alice",
        "COLUMNS": "200",
    }


def test_promote_sends_version_reason_and_the_bearer_token_whose_principal_the_registry_records(fake, env):
    recorder, _ = fake
    recorder.answers[("POST", "/models/loans-approval/promote")] = (200, {"champion": "4", "previous": "3"})
    result = CliRunner().invoke(app, ["promote", "loans-approval", "4", "--reason", "beats Q3"], env=env)
    assert result.exit_code == 0, result.output
    (request,) = recorder.requests
    assert request["body"] == {"version": "4", "reason": "beats Q3"}
    assert request["auth"] == "Bearer s3cret"
    assert "promoted loans-approval v4" in result.stdout and "previous: 3" in result.stdout


def test_a_refused_promotion_is_one_line_with_the_registrys_reason(fake, env):
    recorder, _ = fake
    recorder.answers[("POST", "/models/loans-approval/promote")] = (403, {"detail": "token lacks promote"})
    result = CliRunner().invoke(app, ["promote", "loans-approval", "4", "--reason", "x"], env=env)
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        f"error: registry refused POST {fake[1]}/models/loans-approval/promote (403): token lacks promote"
    )


def test_rollback_sends_reason_and_token(fake, env):
    recorder, _ = fake
    recorder.answers[("POST", "/models/loans-approval/rollback")] = (200, {"champion": "3"})
    result = CliRunner().invoke(app, ["rollback", "loans-approval", "--reason", "accuracy alert"], env=env)
    assert result.exit_code == 0, result.output
    assert recorder.requests[0]["body"] == {"reason": "accuracy alert"}
    assert recorder.requests[0]["auth"] == "Bearer s3cret"


def test_approve_releases_a_held_version_with_reason_and_token(fake, env):
    recorder, _ = fake
    recorder.answers[("POST", "/models/loans-approval/versions/5/approve")] = (200, {"status": "approved"})
    result = CliRunner().invoke(app, ["approve", "loans-approval", "5", "--reason", "reviewed"], env=env)
    assert result.exit_code == 0, result.output
    assert recorder.requests[0]["body"] == {"reason": "reviewed"}
    assert recorder.requests[0]["auth"] == "Bearer s3cret"


def test_lineage_defaults_to_the_champion_and_shows_the_tree(fake, env):
    recorder, _ = fake
    recorder.answers[("GET", "/models/loans-approval")] = (
        200,
        {"name": "loans-approval", "aliases": {"champion": "3"}},
    )
    recorder.answers[("GET", "/models/loans-approval/versions/3/lineage")] = (200, LINEAGE)
    result = CliRunner().invoke(app, ["lineage", "loans-approval"], env=env)
    assert result.exit_code == 0, result.output
    for shown in ("loans-approval v3", "dataset_version: ds-9f2c", "code_version: c177173", "max_depth: 6"):
        assert shown in result.stdout
    assert "DriftDetected" in result.stdout and "beats_champion" in result.stdout


def test_lineage_of_a_model_without_champion_says_so(fake, env):
    recorder, _ = fake
    recorder.answers[("GET", "/models/loans-approval")] = (200, {"name": "loans-approval", "aliases": {}})
    result = CliRunner().invoke(app, ["lineage", "loans-approval"], env=env)
    assert result.exit_code == 1
    assert "loans-approval has no champion yet; name a version" in result.stderr


def test_train_posts_the_request_training_expects(fake, env):
    recorder, _ = fake
    recorder.answers[("POST", "/train")] = (202, {"request_id": "e-1", "model_name": "loans-approval"})
    args = ["train", "loans", "--dataset-version", "ds-1", "--param", "learning_rate=0.05", "--reason", "new data"]
    result = CliRunner().invoke(app, args, env=env)
    assert result.exit_code == 0, result.output
    assert recorder.requests[0]["body"] == {
        "dataset": "loans",
        "dataset_version": "ds-1",
        "params": {"learning_rate": 0.05},
        "reason": "new data",
    }
    assert recorder.requests[0]["auth"] == "Bearer s3cret"
    assert "training loans-approval" in result.stdout


def test_train_wait_follows_the_run_that_took_the_request_and_fails_when_it_fails(fake, env):
    recorder, _ = fake
    recorder.answers[("POST", "/train")] = (202, {"request_id": "e-1", "model_name": "loans-approval"})
    failed = {"id": "r-7", "status": "failed", "stage": "done", "request_ids": ["e-0", "e-1"], "reason": "too few rows"}
    recorder.answers[("GET", "/runs?model_name=loans-approval")] = (200, [failed])
    result = CliRunner().invoke(app, ["train", "loans", "--wait", "--timeout", "10"], env=env)
    assert result.exit_code == 1
    assert "run r-7" in result.stdout
    assert result.stderr.strip().endswith("error: training loans-approval failed: too few rows")


def test_train_refuses_a_param_without_a_value(fake, env):
    result = CliRunner().invoke(app, ["train", "loans", "--param", "learning_rate"], env=env)
    assert result.exit_code == 1
    assert "expected NAME=VALUE" in result.stderr


ROLLOUT = {
    "active": [
        {
            "model_name": "loans-approval",
            "strategy": "canary",
            "candidate_version": "4",
            "champion_version": "3",
            "step": 1,
            "steps": [0.1, 0.5, 1.0],
            "candidate_traffic": 0.5,
            "figures": {
                "champion": {"requests": 300, "errors": 0, "error_rate": 0.0, "labelled": 90, "accuracy": 0.88,
                             "p99_ms": 5.1},
                "candidate": {"requests": 280, "errors": 3, "error_rate": 0.0107, "labelled": 80, "accuracy": -1.0,
                              "p99_ms": 6.4},
            },
        }
    ],
    "recent": [
        {"occurred_at": "2026-11-23T02:43:53.36Z", "model_name": "churn", "strategy": "shadow", "action": "rolled_back",
         "candidate_version": "2", "champion_version": "1", "step": 0, "candidate_traffic": 0.0, "reason": "worse f1"},
        {"occurred_at": "2026-11-23T02:50:00.00Z", "model_name": "loans-approval", "strategy": "canary",
         "action": "stepped", "candidate_version": "4", "champion_version": "3", "step": 1, "candidate_traffic": 0.5,
         "reason": "not worse"},
    ],
}  # fmt: skip


def test_rollout_status_shows_each_rollout_with_both_variants_figures_and_the_recent_steps(fake, env):
    recorder, _ = fake
    recorder.answers[("GET", "/rollout")] = (200, ROLLOUT)
    result = CliRunner().invoke(app, ["rollout", "status"], env=env)
    assert result.exit_code == 0, result.output
    assert recorder.requests[0]["path"] == "/rollout"
    for shown in ("loans-approval", "canary", "1/3", "50%", "300 req", "acc 0.880 (90)", "acc n/a", "p99 6.4 ms"):
        assert shown in result.stdout, shown
    assert "rolled_back" in result.stdout and "v1 → v2" in result.stdout and "worse f1" in result.stdout


def test_rollout_status_of_one_model_keeps_only_its_rollouts(fake, env):
    recorder, _ = fake
    recorder.answers[("GET", "/rollout")] = (200, ROLLOUT)
    result = CliRunner().invoke(app, ["rollout", "status", "churn", "--json"], env=env)
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["active"] == [] and [e["action"] for e in body["recent"]] == ["rolled_back"]


def test_rollout_status_against_a_serving_without_the_endpoint_says_so_in_one_line(fake, env):
    result = CliRunner().invoke(app, ["rollout", "status"], env=env)
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        f"error: serving at {fake[1]} has no GET /rollout (404): it cannot report rollouts"
    )


def test_status_lists_each_models_champion(fake, env):
    recorder, _ = fake
    recorder.answers[("GET", "/models")] = (200, [{"name": "loans-approval"}, {"name": "churn"}])
    recorder.answers[("GET", "/models/loans-approval")] = (200, {"aliases": {"champion": {"version": "3"}}})
    recorder.answers[("GET", "/models/churn")] = (200, {"aliases": {}})
    result = CliRunner().invoke(app, ["status", "--json"], env=env)
    assert json.loads(result.stdout)["champions"] == {"loans-approval": "3", "churn": "none"}
