"""train, lineage, promote and rollback through the flywheel command, against the running training
and registry services. Each test run uses its own model name and its own dataset version."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pandas as pd
import pytest
from river.datasets import synth

from flywheel.common.auth import DEV_TOKEN
from flywheel.common.datasets import DatasetCatalog
from flywheel.common.objectstore import ObjectStore, parquet_bytes, sha256
from flywheel.common.settings import ObjectStoreSettings
from flywheel.schemas import DatasetManifest

pytestmark = pytest.mark.integration

FLYWHEEL = Path(sys.executable).parent / "flywheel"
FLOATS = {"salary", "commission", "hvalue", "loan"}


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(FLYWHEEL), *args], capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )


def write_version(store_settings: ObjectStoreSettings, rows: int = 800) -> str:
    """Seal a labelled dataset version of ``loans`` of our own, as ingestion would."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    stream = synth.Agrawal(classification_function=0, seed=11)
    frame = pd.DataFrame(
        [
            {
                "applicant_id": f"cli-{i}",
                "applied_at": start + timedelta(minutes=i),
                **{k: float(v) if k in FLOATS else int(v) for k, v in x.items()},
                "approved": int(y),
            }
            for i, (x, y) in enumerate(stream.take(rows))
        ]
    )
    data = parquet_bytes(frame)
    version = f"cli-{uuid.uuid4().hex[:8]}"
    manifest = DatasetManifest(
        dataset="loans",
        version=version,
        content_hash=sha256(data),
        row_count=len(frame),
        columns={c: str(t) for c, t in frame.dtypes.items()},
        time_min=frame["applied_at"].min(),
        time_max=frame["applied_at"].max(),
        uri=f"s3://{store_settings.bucket}/datasets/loans/{version}/data.parquet",
        created_at=datetime.now(UTC),
    )
    DatasetCatalog(ObjectStore(store_settings)).write(manifest, data)
    return version


def model_state(registry: str, name: str, check, timeout: float = 45) -> dict:
    """Poll the registry until the model's state satisfies ``check``."""
    deadline = time.monotonic() + timeout
    while True:
        response = httpx.get(f"{registry}/models/{name}", timeout=10)
        if response.status_code == 200 and check(response.json()):
            return response.json()
        if time.monotonic() > deadline:
            raise AssertionError(f"{name} never reached the state: {response.status_code} {response.text[:500]}")
        time.sleep(0.5)


def rollout_of(model: str, version: str, timeout: float = 45) -> dict:
    """Poll `flywheel rollout status MODEL --json` until serving reports the candidate's rollout."""
    deadline = time.monotonic() + timeout
    while True:
        shown = run("rollout", "status", model, "--json")
        assert shown.returncode == 0, shown.stderr
        body = json.loads(shown.stdout)
        found = [r for r in body["active"] + body["recent"] if r["candidate_version"] == version]
        if found:
            return found[0]
        if time.monotonic() > deadline:
            raise AssertionError(f"serving never reported a rollout of {model} v{version}: {body}")
        time.sleep(0.5)


def test_train_lineage_promote_and_rollback_through_the_cli(store_settings, services, topics):
    registry = services["registry"]
    model = f"cli-{uuid.uuid4().hex[:8]}"
    version = write_version(store_settings)

    trained = run("train", "loans", "--model", model, "--dataset-version", version, "--reason", "cli test", "--wait")
    assert trained.returncode == 0, trained.stderr
    assert "status: completed" in trained.stdout and f"dataset_version: {version}" in trained.stdout
    model_state(registry, model, lambda m: m.get("champion") == "1")

    # The same data with another seed (the very same request would be answered by the first run, not
    # trained again): metrics equal the champion's, so the candidate passes ("not worse").
    again = run("train", "loans", "--model", model, "--dataset-version", version, "--param", "seed=7", "--wait")
    assert again.returncode == 0, again.stderr
    model_state(registry, model, lambda m: m.get("challenger") == "2")

    # The approved candidate goes to serving, which starts rolling it out; the CLI reports it.
    rollout = rollout_of(model, "2")
    assert rollout["strategy"] and rollout["champion_version"] == "1"
    table = run("rollout", "status", model, env={"COLUMNS": "200"})
    assert table.returncode == 0, table.stderr
    assert model in table.stdout and "v1 → v2" in table.stdout

    lineage = run("lineage", model, "--json")
    assert lineage.returncode == 0, lineage.stderr
    found = json.loads(lineage.stdout)
    assert found["version"] == "1" and found["dataset_version"] == version
    assert found["code_version"] and found["run_id"] and found["metrics"]["f1"] > 0
    assert all(g["passed"] for g in found["gates"])
    assert found["causation_chain"]
    pretty = run("lineage", model, "2")
    assert pretty.returncode == 0, pretty.stderr
    assert f"{model} v2" in pretty.stdout and f"dataset_version: {version}" in pretty.stdout

    token = {"FLYWHEEL_TOKEN": DEV_TOKEN, "FLYWHEEL_ACTOR": "cli-test"}  # the actor is not believed
    refused = run("promote", model, "2", "--reason", "no token", env={"FLYWHEEL_TOKEN": ""})
    assert refused.returncode == 1
    assert refused.stderr.startswith("error: registry refused POST") and "(401)" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1

    promoted = run("promote", model, "2", "--reason", "cli test promotes", env=token)
    assert promoted.returncode == 0, promoted.stderr
    state = model_state(registry, model, lambda m: m.get("champion") == "2")
    assert state["previous"] == "1"

    status = run("status", "--json")
    assert json.loads(status.stdout)["champions"][model] == "2"

    rolled = run("rollback", model, "--reason", "cli test rolls back", env=token)
    assert rolled.returncode == 0, rolled.stderr
    state = model_state(registry, model, lambda m: m.get("champion") == "1")
    moves = [(h["action"], h["version"], h.get("actor")) for h in state["history"]]
    assert ("promote", "2", "dev-operator") in moves  # the token's principal, whatever FLYWHEEL_ACTOR says
    assert moves[-1][0] == "rollback" and moves[-1][2] == "dev-operator"


def test_promoting_an_unknown_version_is_one_line_with_the_registrys_reason(services):
    token = {"FLYWHEEL_TOKEN": DEV_TOKEN}
    result = run("promote", f"cli-missing-{uuid.uuid4().hex[:6]}", "1", "--reason", "x", env=token)
    assert result.returncode == 1
    assert result.stderr.startswith("error: registry answered 404")
    assert len(result.stderr.strip().splitlines()) == 1


def test_train_of_an_unknown_dataset_is_refused_with_trainings_reason(services):
    result = run("train", "no-such-dataset")
    assert result.returncode == 1
    assert "training answered 404" in result.stderr and "no model spec" in result.stderr
