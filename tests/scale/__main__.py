"""`make scale-test`: the scale test on a stack of its own — a three-broker Kafka and two replicas of every
service — beside any `make up` stack (its own directory, `.stack-scale/`, and ports 2000 up).

It starts that stack, runs `pytest tests/scale` against it, and stops it, whatever the outcome; the
Kafka jars and the MinIO binary are the ones `make install` put in `.stack/`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STACK_DIR = ROOT / ".stack-scale"
OFFSET = 2000
PORTS = {
    "KAFKA": 9092,
    "KAFKA_CONTROLLER": 9093,
    "MINIO": 9000,
    "MINIO_CONSOLE": 9001,
    "MLFLOW": 5000,
    "INGESTION": 8001,
    "FEATURES": 8002,
    "TRAINING": 8003,
    "REGISTRY": 8004,
    "SERVING": 8005,
    "MONITORING": 8006,
}


def scale_env() -> dict[str, str]:
    """The launcher's plan for the scale stack, and where the tests find it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLYWHEEL_STACK_", "FLYWHEEL_KAFKA_"))}
    env |= {f"FLYWHEEL_STACK_{name}_PORT": str(port + OFFSET) for name, port in PORTS.items()}
    env |= {"FLYWHEEL_STACK_DIR": str(STACK_DIR), "FLYWHEEL_STACK_BROKERS": "3", "FLYWHEEL_STACK_REPLICAS": "2"}
    host = "127.0.0.1"
    kafka = PORTS["KAFKA"] + OFFSET
    env |= {
        "FLYWHEEL_SCALE_STACK": "1",
        "FLYWHEEL_KAFKA_BOOTSTRAP_SERVERS": ",".join(f"{host}:{kafka + 2 * i}" for i in range(3)),
        "FLYWHEEL_S3_ENDPOINT_URL": f"http://{host}:{PORTS['MINIO'] + OFFSET}",
        "FLYWHEEL_MLFLOW_TRACKING_URI": f"http://{host}:{PORTS['MLFLOW'] + OFFSET}",
    }
    return env


def share_installed() -> None:
    """The jars and the MinIO binary of `make install`, not a second download and build."""
    for part in ("kafka/libs", "kafka/pom.sha256", "bin/minio"):
        source, target = ROOT / ".stack" / part, STACK_DIR / part
        if not source.exists():
            sys.exit(f"scale-test: {source} is missing: run `make install` first")
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            target.symlink_to(source)


def main() -> int:
    share_installed()
    env = scale_env()
    launcher = [sys.executable, str(ROOT / "infra" / "stack.py")]
    try:
        subprocess.run([*launcher, "up"], check=True, cwd=ROOT, env=env)
        tests = [sys.executable, "-m", "pytest", "tests/scale", *sys.argv[1:]]
        return subprocess.run(tests, cwd=ROOT, env=env).returncode
    finally:
        subprocess.run([*launcher, "down"], cwd=ROOT, env=env)


if __name__ == "__main__":
    sys.exit(main())
