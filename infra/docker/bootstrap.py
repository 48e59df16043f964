"""The compose deployment's one-shot `bootstrap`: every catalogue topic, both buckets, the MinIO and MLflow users.

The same as `infra/stack.py up` does for the local stack: topics are created up front with their
partitions so that no consumer races auto-creation; existing topics and buckets are left alone.
Runs in the Flywheel image; reads the shared FLYWHEEL_* settings the services read, with MinIO's
root key as its own, and each MinIO user's secret key (FLYWHEEL_S3_<USER>_SECRET, from
`make compose-secrets`): a user per service, with its policy (flywheel.common.storeaccess). As MLflow's
admin, it makes a MLflow user per service that uses MLflow (flywheel.common.trackingaccess).
"""

import asyncio
import os

from minio import Minio

from flywheel.common.kafka import ensure_topics
from flywheel.common.settings import KafkaSettings, MlflowSettings, ObjectStoreSettings
from flywheel.common.storeaccess import USERS, provision, service_access
from flywheel.common.trackingaccess import ADMIN, password_variable
from flywheel.common.trackingaccess import USERS as TRACKING_USERS
from flywheel.common.trackingaccess import provision as provision_tracking


def create_buckets(store: ObjectStoreSettings, buckets: list[str]) -> list[str]:
    endpoint = store.endpoint_url.split("://", 1)
    client = Minio(
        endpoint[-1], access_key=store.access_key, secret_key=store.secret_key, secure=endpoint[0] == "https"
    )
    created = [bucket for bucket in buckets if not client.bucket_exists(bucket)]
    for bucket in created:
        client.make_bucket(bucket)
    return created


def main() -> None:
    kafka, store, mlflow = KafkaSettings(), ObjectStoreSettings(), MlflowSettings()
    topics = asyncio.run(ensure_topics(kafka.bootstrap_servers))
    buckets = create_buckets(store, [store.bucket, mlflow.artifact_bucket])
    keys = {user: os.environ[f"FLYWHEEL_S3_{user.upper()}_SECRET"] for user in USERS}
    access = service_access(store.bucket, mlflow.artifact_bucket)
    users = provision(store.endpoint_url, store.access_key, store.secret_key, keys, access)
    passwords = {user: os.environ[password_variable(user)] for user in TRACKING_USERS}
    tracking = provision_tracking(mlflow.tracking_uri, os.environ[password_variable(ADMIN)], passwords)
    print(
        f"bootstrap: created {len(topics)} topics {topics} and buckets {buckets}; MinIO users {users}; "
        f"MLflow users {tracking}"
    )


if __name__ == "__main__":
    main()
