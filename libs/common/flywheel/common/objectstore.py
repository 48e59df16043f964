"""The object store (MinIO, or any S3): buckets, bytes, Parquet and content hashes."""

from __future__ import annotations

import hashlib
import io
from datetime import timedelta
from urllib.parse import urlparse

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from minio import Minio
from minio.error import S3Error

from flywheel.common.settings import ObjectStoreSettings


def sha256(data: bytes) -> str:
    """Hex sha256 of some bytes: the address of content-addressed objects.

    >>> sha256(b"flywheel")[:12]
    '249fcd5879ee'
    """
    return hashlib.sha256(data).hexdigest()


def parquet_bytes(frame: pd.DataFrame) -> bytes:
    """Canonical Parquet bytes of a frame: same rows and columns in, same bytes out."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    sink = io.BytesIO()
    # The footer names the pyarrow version, so hashes are stable for one locked version.
    pq.write_table(table, sink, compression="zstd", write_statistics=True, store_schema=True)
    return sink.getvalue()


class ObjectStore:
    """A thin wrapper over the MinIO client bound to one default bucket."""

    def __init__(self, settings: ObjectStoreSettings) -> None:
        url = urlparse(settings.endpoint_url)
        self.settings = settings
        self.bucket = settings.bucket
        self.client = Minio(
            url.netloc,
            access_key=settings.access_key,
            secret_key=settings.secret_key,
            secure=url.scheme == "https",
            region=settings.region,
        )

    def ensure_bucket(self, bucket: str | None = None) -> None:
        """Create the bucket if it is missing (idempotent, safe under races)."""
        name = bucket or self.bucket
        if self.client.bucket_exists(name):
            return
        try:
            self.client.make_bucket(name)
        except S3Error as exc:
            if exc.code not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                raise

    def ping(self) -> bool:
        return self.client.bucket_exists(self.bucket)

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        self.client.put_object(self.bucket, key, io.BytesIO(data), len(data), content_type=content_type)
        return f"s3://{self.bucket}/{key}"

    def get_bytes(self, key: str) -> bytes:
        response = self.client.get_object(self.bucket, key)
        try:
            return response.read()
        finally:
            response.close()
            response.release_conn()

    def exists(self, key: str) -> bool:
        try:
            self.client.stat_object(self.bucket, key)
        except S3Error as exc:
            if exc.code in {"NoSuchKey", "NoSuchObject", "NoSuchBucket"}:
                return False
            raise
        return True

    def list_keys(self, prefix: str) -> list[str]:
        return [o.object_name for o in self.client.list_objects(self.bucket, prefix=prefix, recursive=True)]

    def delete(self, key: str) -> None:
        self.client.remove_object(self.bucket, key)

    def put_parquet(self, key: str, frame: pd.DataFrame) -> tuple[str, str]:
        """Store a frame as Parquet; return its URI and the sha256 of the stored bytes."""
        data = parquet_bytes(frame)
        return self.put_bytes(key, data, "application/vnd.apache.parquet"), sha256(data)

    def get_parquet(self, key: str) -> pd.DataFrame:
        return pq.read_table(io.BytesIO(self.get_bytes(key))).to_pandas()

    def presigned_url(self, key: str, expires: timedelta = timedelta(hours=1)) -> str:
        return self.client.presigned_get_object(self.bucket, key, expires=expires)

    @staticmethod
    def key_of(uri: str) -> str:
        """The object key of an ``s3://bucket/key`` URI."""
        return urlparse(uri).path.lstrip("/")
