"""Two registry replicas registering candidates of one model at the same moment, on the real MLflow.

MLflow numbers a model's versions MAX+1, and concurrent registrations collided until a 2026 fix
(mlflow PR #22635): this holds the pinned MLflow to it through the registry's own ``ModelStore``,
from two processes (the two replicas), each registering from several threads at once.
"""

from __future__ import annotations

import multiprocessing
import uuid
from concurrent.futures import ThreadPoolExecutor

from flywheel.common.settings import MlflowSettings, ObjectStoreSettings
from flywheel.common.tracking import configure_mlflow
from flywheel.registry.modelstore import ModelStore

# 12 at once: within the MLflow server's database pool (5 + 10 overflow), which 24 exhausted on a busy machine
# (QueuePool timeout after 30 s) while every registration waited on SQLite's one writer
PER_REPLICA = 6


def replica(name: str, run_id: str, barrier: multiprocessing.synchronize.Barrier, out: multiprocessing.Queue) -> None:
    """One registry replica: ``PER_REPLICA`` candidates of ``name`` at once, each through its own client."""
    settings = MlflowSettings(), ObjectStoreSettings()
    stores = [ModelStore(configure_mlflow(*settings)) for _ in range(PER_REPLICA)]
    barrier.wait(timeout=60)

    def register(i: int) -> str:
        try:
            return stores[i].register(name, f"runs:/{run_id}/model", run_id, {"flywheel.test": str(i)})
        except Exception as exc:
            return f"error: {exc!r}"[:300]

    with ThreadPoolExecutor(PER_REPLICA) as pool:
        out.put(list(pool.map(register, range(PER_REPLICA))))


def test_two_registry_replicas_registering_one_model_at_once_get_distinct_versions_and_no_error(mlflow_settings):
    client = configure_mlflow(mlflow_settings, ObjectStoreSettings())
    name = f"it-race-{uuid.uuid4().hex[:8]}"
    run_id = client.create_run(client.create_experiment(name)).info.run_id
    context = multiprocessing.get_context("spawn")
    barrier, out = context.Barrier(2), context.Queue()
    replicas = [context.Process(target=replica, args=(name, run_id, barrier, out)) for _ in range(2)]
    for process in replicas:
        process.start()
    versions = [v for _ in replicas for v in out.get(timeout=120)]
    for process in replicas:
        process.join(timeout=30)
        assert process.exitcode == 0
    errors = [v for v in versions if v.startswith("error")]
    assert not errors, errors[:3]
    assert sorted(versions, key=int) == [str(v) for v in range(1, 2 * PER_REPLICA + 1)]
    registered = {mv.version for mv in client.search_model_versions(f"name = '{name}'")}
    assert registered == {str(v) for v in range(1, 2 * PER_REPLICA + 1)}
