"""The compose deployment's one-shot `bootstrap`: every catalogue topic, both buckets and the MinIO users.

The same as `infra/stack.py up` does for the local stack: topics are created up front with their
partitions so that no consumer races auto-creation; existing topics and buckets are left alone.
Runs in the Flywheel image; reads the shared FLYWHEEL_* settings the services read, with MinIO's
root key as its own, and each MinIO user's secret key (FLYWHEEL_S3_<USER>_SECRET, from
`make compose-secrets`): a user per service, with its policy (flywheel.common.storeaccess).
"""

import asyncio
import os

from minio import Minio

from flywheel.common.kafka import ensure_topics
from flywheel.common.settings import KafkaSettings, MlflowSettings, ObjectStoreSettings
from flywheel.common.storeaccess import USERS, provision, service_access


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
    print(f"bootstrap: created {len(topics)} topics {topics} and buckets {buckets}; MinIO users {users}")


if __name__ == "__main__":
    main()
