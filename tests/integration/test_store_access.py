"""Each service's MinIO key reaches only its own objects, on the running stack's MinIO.

The launcher gives every service its own MinIO user (``flywheel.common.storeaccess``): ingestion
writes datasets and labels, features the feature-set archive, everyone reads the data bucket, and
only MLflow's user reaches the model artifacts (the services go through MLflow's artifact proxy).
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator

import pytest
from minio import Minio
from minio.error import S3Error

from flywheel.common.settings import ObjectStoreSettings
from flywheel.common.storeaccess import USERS
from infra.launcher.credentials import store_keys
from infra.launcher.minio import BUCKETS, MINIO_PASSWORD, MINIO_USER

DATA, ARTIFACTS = BUCKETS


def client(user: str, secret: str | None = None) -> Minio:
    endpoint = ObjectStoreSettings().endpoint_url.split("://", 1)[1]
    return Minio(endpoint, access_key=user, secret_key=secret or store_keys()[user], secure=False)


def may_put(minio: Minio, bucket: str, key: str) -> bool:
    try:
        minio.put_object(bucket, key, io.BytesIO(b"x"), 1)
    except S3Error as refused:
        assert refused.code == "AccessDenied", refused
        return False
    minio.remove_object(bucket, key)
    return True


def may_get(minio: Minio, bucket: str, key: str) -> bool:
    try:
        minio.get_object(bucket, key).read()
    except S3Error as refused:
        assert refused.code == "AccessDenied", refused
        return False
    return True


@pytest.fixture
def objects() -> Iterator[dict[str, tuple[str, str]]]:
    """One object in each place, written with the root key."""
    root = client(MINIO_USER, MINIO_PASSWORD)
    tag = uuid.uuid4().hex[:8]
    placed = {
        "dataset": (DATA, f"datasets/access-{tag}/v/data.parquet"),
        "label batch": (DATA, f"labels/access-{tag}/b.parquet"),
        "feature set": (DATA, f"feature-sets/access-{tag}/v.json"),
        "model artifact": (ARTIFACTS, f"access-{tag}/artifacts/model/model.skops"),
    }
    for bucket, key in placed.values():
        root.put_object(bucket, key, io.BytesIO(b"x"), 1)
    yield placed
    for bucket, key in placed.values():
        root.remove_object(bucket, key)


def test_each_service_key_reads_and_writes_only_what_its_policy_names(services, objects):
    writes = {
        "ingestion": {"dataset", "label batch"},
        "features": {"feature set"},
        "training": {"feature set"},
        "mlflow": {"model artifact"},
    }
    seen: dict[str, tuple[set[str], set[str]]] = {}
    for user in USERS:
        minio = client(user)
        read = {what for what, (bucket, key) in objects.items() if may_get(minio, bucket, key)}
        wrote = {what for what, (bucket, key) in objects.items() if may_put(minio, bucket, f"{key}.new")}
        seen[user] = (read, wrote)
    data = {"dataset", "label batch", "feature set"}
    for user, (read, wrote) in seen.items():
        assert wrote == writes.get(user, set()), (user, wrote)
        assert read == ({"model artifact"} if user == "mlflow" else data), (user, read)
    print("\nMinIO access by user (read | write):")
    for user, (read, wrote) in seen.items():
        print(f"  {user:<11} {sorted(read)} | {sorted(wrote)}")


def test_a_wrong_secret_is_refused_and_no_service_key_administers_minio(services):
    with pytest.raises(S3Error, match=r"SignatureDoesNotMatch|InvalidAccessKeyId"):
        client("serving", "not-the-secret-of-serving").list_objects(DATA).__next__()
    with pytest.raises(S3Error, match="AccessDenied"):
        client("ingestion").make_bucket(f"not-{uuid.uuid4().hex[:8]}")
