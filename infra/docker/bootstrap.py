"""The compose deployment's one-shot `bootstrap`: every catalogue topic, both buckets, the MinIO and MLflow users.

The same as `infra/stack.py up` does for the local stack: topics are created up front with their
partitions so that no consumer races auto-creation; existing topics and buckets are left alone.
Runs in the Flywheel image; reads the shared FLYWHEEL_* settings the services read, with MinIO's
root key as its own, and each MinIO user's secret key (FLYWHEEL_S3_<USER>_SECRET, from
`make compose-secrets`): a user per service, with its policy (flywheel.common.storeaccess). As MLflow's
admin, it makes a MLflow user per service that uses MLflow (flywheel.common.trackingaccess).
On a cluster (docker-compose.cluster.yml) BOOTSTRAP_KAFKA_BROKERS says how many brokers to wait for:
a topic gets as many copies as there are brokers when it is made (up to three).
"""

import asyncio
import os
import time

from aiokafka.admin import AIOKafkaAdminClient
from minio import Minio

from flywheel.common.kafka import client_security, ensure_topics
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


async def wait_for_brokers(bootstrap_servers: str, expected: int, timeout_s: float = 120.0) -> int:
    """How many brokers the cluster's metadata lists, once that is ``expected`` (a healthy node may not
    yet be in the others' metadata)."""
    deadline = time.monotonic() + timeout_s
    admin = AIOKafkaAdminClient(**client_security(), bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        while (brokers := len((await admin.describe_cluster())["brokers"])) < expected:
            if time.monotonic() > deadline:
                raise RuntimeError(f"bootstrap: {brokers} Kafka brokers after {timeout_s:.0f} s, not {expected}")
            await asyncio.sleep(1.0)
        return brokers
    finally:
        await admin.close()


def main() -> None:
    kafka, store, mlflow = KafkaSettings(), ObjectStoreSettings(), MlflowSettings()
    brokers = asyncio.run(
        wait_for_brokers(kafka.bootstrap_servers, int(os.environ.get("BOOTSTRAP_KAFKA_BROKERS", "1")))
    )
    topics = asyncio.run(ensure_topics(kafka.bootstrap_servers))
    buckets = create_buckets(store, [store.bucket, mlflow.artifact_bucket])
    keys = {user: os.environ[f"FLYWHEEL_S3_{user.upper()}_SECRET"] for user in USERS}
    access = service_access(store.bucket, mlflow.artifact_bucket)
    users = provision(store.endpoint_url, store.access_key, store.secret_key, keys, access)
    passwords = {user: os.environ[password_variable(user)] for user in TRACKING_USERS}
    tracking = provision_tracking(mlflow.tracking_uri, os.environ[password_variable(ADMIN)], passwords)
    print(
        f"bootstrap: {brokers} Kafka brokers; created {len(topics)} topics {topics} and buckets {buckets}; "
        f"MinIO users {users}; MLflow users {tracking}"
    )


if __name__ == "__main__":
    main()
