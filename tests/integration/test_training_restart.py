"""Durable training on the real stack: SIGKILL the training process mid-request, restart it, and the
request ends exactly once, with no run left hanging.

The kill and restart go through the launcher's pid files (``infra/launcher/``), so the stack is
whole again when a test ends, whatever it asserts.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

import httpx
import pytest
from mlflow import MlflowClient

from flywheel.common.settings import KafkaSettings, MlflowSettings, ObjectStoreSettings
from flywheel.common.tracking import configure_mlflow
from flywheel.schemas import TRAINING_COMPLETED, TRAINING_FAILED
from infra.launcher.commands import components, restart
from infra.launcher.processes import group_members, port_in_use, recorded_group
from tests.integration.test_training_runs import agrawal_rows, request_training, unique, wait_for, write_version
from tests.support.kafka import TopicReader

pytestmark = pytest.mark.usefixtures("topics")


def kill_training() -> int:
    """SIGKILL the training service's process group, as a crash would; its pid."""
    [component] = [c for c in components() if c.name == "training"]
    pgid = recorded_group(component)
    assert pgid is not None, "training is not running from this stack's pid file"
    os.killpg(pgid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    # The leader turns zombie before its other threads have exited and let go of the port.
    while group_members(pgid) or port_in_use(component.port):
        assert time.monotonic() < deadline, f"training (pid {pgid}) survived SIGKILL"
        time.sleep(0.1)
    return pgid


async def runs_of(training: str, model_name: str) -> list[dict]:
    async with httpx.AsyncClient(base_url=training, timeout=10) as http:
        response = await http.get("/runs", params={"model_name": model_name})
    response.raise_for_status()
    return response.json()


async def wait_for_status(training: str, model_name: str, status: str, timeout: float = 120) -> None:
    """Until a run of the model is ``status``; a running one also past opening its MLflow run (progress 0.1)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        runs = await runs_of(training, model_name)
        if any(r["status"] == status and (status != "running" or r["progress"] >= 0.1) for r in runs):
            return
        assert asyncio.get_running_loop().time() < deadline, f"no {status} run of {model_name}: {runs}"
        await asyncio.sleep(0.2)


@pytest.mark.timeout(900)
@pytest.mark.parametrize("phase", ["queued", "running"])
async def test_a_request_survives_a_sigkill_of_training_and_ends_exactly_once(
    phase: str,
    kafka: KafkaSettings,
    store_settings: ObjectStoreSettings,
    mlflow_settings: MlflowSettings,
    services: dict[str, str],
):
    version = write_version(store_settings, agrawal_rows(1200, function=0))
    name = unique(f"it-kill-{phase}")
    training = services["training"]
    async with (
        TopicReader(kafka.bootstrap_servers, TRAINING_COMPLETED.name) as completed,
        TopicReader(kafka.bootstrap_servers, TRAINING_FAILED.name) as failed,
    ):
        request_id = await request_training(training, name, version, reason=f"killed while {phase}")
        await wait_for_status(training, name, phase)
        pid = kill_training()
        await asyncio.to_thread(restart, ["training"])
        [trained] = await wait_for(completed, name, timeout=400)
        await asyncio.sleep(10)  # past the debounce window: a second run would have started by now
        ended = await completed.collect(lambda _: True, timeout=1, where=lambda b: b.get("model_name") == name)
        failures = await failed.collect(lambda _: True, timeout=1, where=lambda b: b.get("model_name") == name)

    print(f"\nSIGKILL of training (pid {pid}), request {phase}: {len(ended)} completed, {len(failures)} failed")
    assert len(ended) == 1 and failures == []
    assert trained["request_ids"] == [request_id] and trained["causation_id"] == request_id
    # Nothing hangs: the restarted service ran the request to its end, and no MLflow run is left running.
    # (A rebalance as the restarted process's consumers join may release a queued run once: it is taken again.)
    runs = await runs_of(training, name)
    assert [r["request_ids"] for r in runs if r["status"] == "completed"] == [[request_id]], runs
    assert {r["status"] for r in runs} <= {"completed", "released"}, runs
    client: MlflowClient = configure_mlflow(mlflow_settings, store_settings)
    experiment = client.get_experiment_by_name(f"flywheel/{name}")
    statuses = sorted(r.info.status for r in client.search_runs([experiment.experiment_id]))
    assert "RUNNING" not in statuses and statuses.count("FINISHED") == 1, statuses
    if phase == "running":  # the killed run had opened its MLflow run: the re-run ended it KILLED
        assert statuses == ["FINISHED", "KILLED"], statuses
    assert trained["run_id"] in {r.info.run_id for r in client.search_runs([experiment.experiment_id])}
