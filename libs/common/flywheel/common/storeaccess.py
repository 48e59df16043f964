"""Who may touch which objects: a MinIO user per service, each with a policy on its own prefixes.

The services share the data bucket; only its owners write there — ingestion the datasets and label
batches, features (and training) the feature-set archive — and every service reads it. Model artifacts travel
through MLflow's artifact proxy (``--serve-artifacts``), so only MLflow's own user reaches the
artifact bucket: no service key can read or change a model file behind the registry's back.

The launcher (``infra/launcher/``) and the compose deployment's bootstrap both call ``provision``
with the root key; the services then run with their own keys (``FLYWHEEL_S3_ACCESS_KEY``).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from minio import MinioAdmin
from minio.credentials import StaticProvider

ARTIFACTS = "mlflow"  # the MLflow server's user: the artifact bucket is its alone
READERS = ("registry", "serving", "monitoring")
USERS = ("ingestion", "features", "training", *READERS, ARTIFACTS)


@dataclass(frozen=True)
class Access:
    """What one user may do: read whole buckets, write under some prefixes of them."""

    read: tuple[str, ...] = ()  # buckets
    write: tuple[tuple[str, str], ...] = field(default=())  # (bucket, prefix)


def service_access(data_bucket: str, artifact_bucket: str) -> dict[str, Access]:
    """Each user's access, by user name (the service's name)."""
    from flywheel.common.datasets import LABELS_PREFIX  # imported here: the launcher needs only USERS
    from flywheel.common.datasets import PREFIX as DATASETS_PREFIX
    from flywheel.common.featureversions import PREFIX as FEATURE_SETS_PREFIX

    return {
        "ingestion": Access((data_bucket,), ((data_bucket, DATASETS_PREFIX), (data_bucket, LABELS_PREFIX))),
        "features": Access((data_bucket,), ((data_bucket, FEATURE_SETS_PREFIX),)),
        # training archives the feature-set version it trains with, should features not have yet
        "training": Access((data_bucket,), ((data_bucket, FEATURE_SETS_PREFIX),)),
        **{name: Access((data_bucket,)) for name in READERS},
        ARTIFACTS: Access((artifact_bucket,), ((artifact_bucket, ""),)),
    }


def policy(access: Access) -> dict[str, Any]:
    """The IAM policy document of one user's access.

    >>> doc = policy(Access(("data",), (("data", "datasets"),)))
    >>> [s["Resource"] for s in doc["Statement"]]
    [['arn:aws:s3:::data'], ['arn:aws:s3:::data/*'], ['arn:aws:s3:::data/datasets/*']]
    """
    buckets = sorted({*access.read, *(bucket for bucket, _ in access.write)})
    statements = [
        {
            "Effect": "Allow",
            "Action": ["s3:ListBucket", "s3:GetBucketLocation", "s3:ListBucketMultipartUploads"],
            "Resource": [f"arn:aws:s3:::{b}" for b in buckets],
        }
    ]
    if access.read:
        statements.append(
            {"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": [f"arn:aws:s3:::{b}/*" for b in access.read]}
        )
    if access.write:
        statements.append(
            {
                "Effect": "Allow",
                "Action": [
                    "s3:GetObject",
                    "s3:PutObject",
                    "s3:DeleteObject",
                    "s3:AbortMultipartUpload",
                    "s3:ListMultipartUploadParts",
                ],
                "Resource": [f"arn:aws:s3:::{b}/{_under(p)}*" for b, p in access.write],
            }
        )
    return {"Version": "2012-10-17", "Statement": statements}


def _under(prefix: str) -> str:
    return f"{prefix.strip('/')}/" if prefix.strip("/") else ""


def new_secrets(users: Iterable[str]) -> dict[str, str]:
    """A fresh random secret key per user."""
    return {user: secrets.token_urlsafe(30) for user in users}


def provision(
    endpoint_url: str, root_key: str, root_secret: str, keys: Mapping[str, str], access: Mapping[str, Access]
) -> list[str]:
    """Create (or update) each user with its secret and its own policy; the users provisioned."""
    scheme, _, host = endpoint_url.partition("://")
    admin = MinioAdmin(endpoint=host, credentials=StaticProvider(root_key, root_secret), secure=scheme == "https")
    for user, secret in keys.items():
        name = f"flywheel-{user}"
        admin.policy_add(name, policy=policy(access[user]))
        admin.user_add(user, secret)
        admin.policy_set(name, user=user)
    return sorted(keys)
