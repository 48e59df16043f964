"""Rebuilding a drift-trained champion from its lineage on the running stack (issue 19).

The champion is a drift retrain over several versions ingested after the drift, split at the drift's
cut. ``flywheel rebuild`` trains it again on exactly those versions, that cut, spec, seed and code:
the metrics and the model's payload are equal, the result is registered tagged ``rebuild_of``, and it
neither moves the champion nor starts a rollout. A recorded code version that is not the running one
is refused (409, naming both) unless forced.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from datetime import UTC, datetime, timedelta

import httpx
import pandas as pd
import pytest
from mlflow import MlflowClient

from flywheel.common.datasets import DatasetCatalog
from flywheel.common.objectstore import ObjectStore, parquet_bytes, sha256
from flywheel.common.settings import KafkaSettings, ObjectStoreSettings
from flywheel.common.tracking import Tags
from flywheel.schemas import (
    MODELS_APPROVED,
    MODELS_CHAMPION,
    MODELS_ROLLOUT,
    TRAINING_COMPLETED,
    DatasetManifest,
    DriftDetected,
)
from tests.integration.test_cli_registry import FLYWHEEL
from tests.integration.test_registry_gates import TOKEN
from tests.integration.test_training_runs import DATASET, agrawal_rows, tracking, unique, wait_for
from tests.support.auth import OPERATOR
from tests.support.kafka import TopicReader, producer, send_event

pytestmark = pytest.mark.usefixtures("topics")
__all__ = ["tracking"]  # the fixture, shared


def chained_version(store_settings: ObjectStoreSettings, frame: pd.DataFrame, parent: str | None) -> str:
    """Seal a ``loans`` version after ``parent``, as ingestion's roller would."""
    data = parquet_bytes(frame)
    version = unique("rebuild")
    manifest = DatasetManifest(
        dataset=DATASET,
        version=version,
        content_hash=sha256(data),
        row_count=len(frame),
        columns={c: str(t) for c, t in frame.dtypes.items()},
        time_min=frame["applied_at"].min(),
        time_max=frame["applied_at"].max(),
        uri=f"s3://{store_settings.bucket}/datasets/{DATASET}/{version}/data.parquet",
        parent_version=parent,
        created_at=datetime.now(UTC),
    )
    DatasetCatalog(ObjectStore(store_settings)).write(manifest, data)
    return version


def rows(n: int, seed: int, start_minute: int) -> pd.DataFrame:
    start = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=start_minute)
    return agrawal_rows(n, function=0, seed=seed, start=start)


async def drift_trained_champion(kafka: KafkaSettings, store_settings: ObjectStoreSettings, name: str) -> dict:
    """A first model trained by a drift retrain on the versions sealed after the drift: its ``ModelTrained``."""
    before = chained_version(store_settings, rows(1200, seed=3, start_minute=0), parent=None)
    drift = DriftDetected(producer="test", dataset=DATASET, model_name=name, kind="data", window_size=500, retrain=True)
    await asyncio.sleep(0.05)  # every version below is sealed after the drift's moment
    straddling = chained_version(store_settings, rows(300, seed=5, start_minute=1200), parent=before)
    fresh = chained_version(store_settings, rows(600, seed=6, start_minute=1500), parent=straddling)
    fresher = chained_version(store_settings, rows(600, seed=7, start_minute=2100), parent=fresh)
    p = await producer(kafka.bootstrap_servers)
    try:
        async with (
            TopicReader(kafka.bootstrap_servers, TRAINING_COMPLETED.name) as completed,
            TopicReader(kafka.bootstrap_servers, MODELS_CHAMPION.name) as champion,
        ):
            await send_event(p, drift)
            [trained] = await wait_for(completed, name, timeout=120)
            [changed] = await wait_for(champion, name, timeout=60)
    finally:
        await p.stop()
    assert changed["version"] == "1", changed
    lineage = trained["lineage"]
    assert lineage["dataset_versions"] == [before, straddling, fresh, fresher]
    assert lineage["drift_cut"] == sorted([fresh, fresher]) and lineage["window"]["drift"] == "after_drift"
    return trained


def flywheel_cli(services: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """The command, pointed at this stack's services (not the default ports)."""
    env = {**os.environ, "FLYWHEEL_TRAINING_URL": services["training"], "FLYWHEEL_REGISTRY_URL": services["registry"]}
    return subprocess.run([str(FLYWHEEL), *args], capture_output=True, text=True, timeout=timeout, env=env)


async def nothing_of(reader: TopicReader, name: str, seconds: float) -> None:
    """No event of model ``name`` arrives on the reader's topic within ``seconds``."""
    try:
        seen = await reader.collect(bool, timeout=seconds, where=lambda b: b.get("model_name") == name)
    except AssertionError:
        return
    raise AssertionError(f"{reader.topic}: unexpected events of {name}: {seen}")


async def test_a_drift_trained_champion_is_rebuilt_with_equal_metrics_as_an_audit_that_never_serves(
    kafka: KafkaSettings, store_settings, tracking: MlflowClient, services
):
    name = unique("it-rebuild")
    original = await drift_trained_champion(kafka, store_settings, name)

    async with (
        TopicReader(kafka.bootstrap_servers, MODELS_APPROVED.name) as approved,
        TopicReader(kafka.bootstrap_servers, MODELS_ROLLOUT.name) as rollouts,
        TopicReader(kafka.bootstrap_servers, MODELS_CHAMPION.name) as champions,
    ):
        started = time.monotonic()
        done = await asyncio.to_thread(flywheel_cli, services, "rebuild", name, "1", "--json", "--timeout", "240")
        print(f"\nflywheel rebuild {name} 1: {time.monotonic() - started:.1f}s, exit {done.returncode}")
        assert done.returncode == 0, done.stdout + done.stderr
        result = json.loads(done.stdout)
        comparison = result["comparison"]
        assert comparison["metrics_equal"] and comparison["inputs_equal"], comparison
        assert comparison["model_equal"] and comparison["equal"], comparison  # the skops payload too
        assert result["version"] == "2" and result["rebuild_of"] == "1" and result["status"] == "rebuild"
        assert result["champion"] == "1"
        for reader in (approved, rollouts, champions):  # nothing the rebuild might wrongly have set off
            await nothing_of(reader, name, seconds=2)

    rebuilt = tracking.get_run(result["run_id"])
    assert rebuilt.data.tags["flywheel.rebuild_of"] == "1"
    assert {k: v for k, v in rebuilt.data.metrics.items() if "." not in k} == original["metrics"]  # exactly
    async with httpx.AsyncClient(base_url=services["registry"], timeout=10) as http:
        model = (await http.get(f"/models/{name}")).json()
        refused = await http.post(f"/models/{name}/promote", json={"version": "2", "actor": "it"}, headers=TOKEN)
    assert model["aliases"] == {"champion": "1"}
    [v2] = [v for v in model["versions"] if v["version"] == "2"]
    assert v2["tags"]["rebuild_of"] == "1" and not v2["may_serve"]
    assert refused.status_code == 409, refused.text

    # the version's recorded code is not what training runs: refused with both, unless forced
    tracking.set_tag(original["run_id"], Tags.CODE_VERSION, "0" * 40)
    async with httpx.AsyncClient(base_url=services["training"], headers=OPERATOR, timeout=30) as http:
        answer = await http.post("/rebuild", json={"model_name": name, "version": "1"})
        assert answer.status_code == 409, answer.text
        assert "'" + "0" * 40 + "'" in answer.json()["detail"] and "training runs" in answer.json()["detail"]
        forced = await http.post("/rebuild", json={"model_name": name, "version": "1", "force": True})
    assert forced.status_code == 202, forced.text
    async with TopicReader(kafka.bootstrap_servers, TRAINING_COMPLETED.name) as completed:
        [trained] = await wait_for(completed, name, timeout=120)
    assert trained["rebuild_of"] == "1" and trained["metrics"] == original["metrics"]
    forced_run = tracking.get_run(trained["run_id"]).data.tags
    assert forced_run[Tags.CODE_VERSION] != "0" * 40  # trained by the code that runs, and says so
    assert json.loads(forced_run["flywheel.rebuild.comparison"])["equal"]  # only the tag was rewritten
