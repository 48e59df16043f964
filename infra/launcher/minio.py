"""MinIO: built from source with `go install` at a pinned version; two buckets and a user per service."""

from __future__ import annotations

import os
import shutil
import subprocess

from .component import Component, http_ok, run_build_step, step
from .credentials import store_keys
from .paths import STACK
from .ports import HOST, MINIO_CONSOLE_PORT, MINIO_PORT

MINIO_BIN = STACK / "bin" / "minio"
MINIO_MODULE, MINIO_VERSION = "github.com/minio/minio", "v0.0.0-20260212201848-7aac2a2c5b7c"
MINIO_USER, MINIO_PASSWORD = "flywheel", "flywheel-secret"
BUCKETS = ("flywheel", "mlflow")


def install_minio() -> None:
    """Build MinIO once, and again when the binary is not the pinned version."""
    if minio_version() != MINIO_VERSION:
        step("minio", f"building {MINIO_MODULE}@{MINIO_VERSION} with go install (a few minutes, once)")
        env = {**os.environ, "GOBIN": str(MINIO_BIN.parent), "CGO_ENABLED": "0"}
        run_build_step(["go", "install", f"{MINIO_MODULE}@{MINIO_VERSION}"], env=env)


def minio_version() -> str | None:
    """The module version `go install` recorded in the MinIO binary, None without one."""
    if not MINIO_BIN.exists():
        return None
    if shutil.which("go") is None:  # cannot tell; trust the binary that is there
        return MINIO_VERSION
    info = subprocess.run(["go", "version", "-m", str(MINIO_BIN)], capture_output=True, text=True).stdout
    for line in info.splitlines():
        fields = line.split()
        if fields[:2] == ["mod", MINIO_MODULE] and len(fields) >= 3:
            return fields[2]
    return None


def create_buckets() -> None:
    """Both buckets, and a MinIO user per service with its policy (flywheel.common.storeaccess)."""
    from minio import Minio

    from flywheel.common.storeaccess import provision, service_access

    client = Minio(f"{HOST}:{MINIO_PORT}", access_key=MINIO_USER, secret_key=MINIO_PASSWORD, secure=False)
    for bucket in BUCKETS:
        if not client.bucket_exists(bucket):
            client.make_bucket(bucket)
    provision(f"http://{HOST}:{MINIO_PORT}", MINIO_USER, MINIO_PASSWORD, store_keys(), service_access(*BUCKETS))


def minio_component() -> Component:
    return Component(
        "minio",
        MINIO_PORT,
        lambda: [
            str(MINIO_BIN),
            "server",
            str(STACK / "data" / "minio"),
            "--address",
            f"{HOST}:{MINIO_PORT}",
            "--console-address",
            f"{HOST}:{MINIO_CONSOLE_PORT}",
            "--quiet",
        ],
        http_ok(f"http://{HOST}:{MINIO_PORT}/minio/health/live"),
        30,
        f"http://{HOST}:{MINIO_PORT}  (console :{MINIO_CONSOLE_PORT})",
        env={
            "MINIO_ROOT_USER": MINIO_USER,
            "MINIO_ROOT_PASSWORD": MINIO_PASSWORD,
            "MINIO_BROWSER": "on",
            "MINIO_UPDATE": "off",
        },
        after_start=create_buckets,
        infra=True,
    )
