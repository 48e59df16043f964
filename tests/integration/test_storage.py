"""The object store and the tracking server, for real."""

import uuid

import httpx
import mlflow
import pandas as pd

from flywheel.common.objectstore import ObjectStore, sha256
from flywheel.common.settings import ObjectStoreSettings
from flywheel.common.tracking import configure_mlflow


def test_bytes_and_parquet_round_trip_through_minio_with_stable_hashes(store_settings):
    store = ObjectStore(store_settings)
    store.ensure_bucket()
    key = f"tests/{uuid.uuid4()}"
    uri = store.put_bytes(f"{key}/blob", b"flywheel")
    assert uri == f"s3://{store.bucket}/{key}/blob"
    assert store.get_bytes(f"{key}/blob") == b"flywheel"
    frame = pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", None]})
    _, digest = store.put_parquet(f"{key}/frame.parquet", frame)
    _, again = store.put_parquet(f"{key}/again.parquet", frame.copy())
    assert digest == again == sha256(store.get_bytes(f"{key}/frame.parquet"))
    pd.testing.assert_frame_equal(store.get_parquet(f"{key}/frame.parquet"), frame)
    assert store.exists(f"{key}/blob") and not store.exists(f"{key}/missing")
    assert httpx.get(store.presigned_url(f"{key}/blob")).content == b"flywheel"
    assert sorted(store.list_keys(key)) == [f"{key}/again.parquet", f"{key}/blob", f"{key}/frame.parquet"]


def test_an_mlflow_run_logs_to_the_server_and_its_artifact_lands_in_minio(mlflow_settings, store_settings):
    client = configure_mlflow(mlflow_settings, store_settings)
    mlflow.set_experiment("flywheel-integration-tests")
    with mlflow.start_run() as run:
        mlflow.log_param("seed", 7)
        mlflow.log_metric("accuracy", 0.9)
        mlflow.log_text("hello from flywheel", "notes/hello.txt")
    fetched = client.get_run(run.info.run_id)
    assert fetched.data.params["seed"] == "7" and fetched.data.metrics["accuracy"] == 0.9
    artifacts = ObjectStore(ObjectStoreSettings(bucket=mlflow_settings.artifact_bucket))
    keys = artifacts.list_keys("")
    stored = [k for k in keys if run.info.run_id in k and k.endswith("notes/hello.txt")]
    assert stored, f"artifact of run {run.info.run_id} not found in bucket {mlflow_settings.artifact_bucket}"
    assert artifacts.get_bytes(stored[0]) == b"hello from flywheel"
