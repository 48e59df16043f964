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
LAUNCHER = ROOT / "infra" / "stack.py"


def scale_env() -> dict[str, str]:
    """The launcher's plan for the scale stack (every port 2000 up), and where the tests find it: the
    addresses the launcher gives its own services (`stack.py env`), not a second port table."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLYWHEEL_STACK_", "FLYWHEEL_KAFKA_"))}
    env |= {
        "FLYWHEEL_STACK_DIR": str(STACK_DIR),
        "FLYWHEEL_STACK_PORT_OFFSET": "2000",
        "FLYWHEEL_STACK_BROKERS": "3",
        "FLYWHEEL_STACK_REPLICAS": "2",
    }
    shown = subprocess.run(
        [sys.executable, str(LAUNCHER), "env"], check=True, cwd=ROOT, env=env, capture_output=True, text=True
    ).stdout
    where = dict(line.split("=", 1) for line in shown.splitlines())
    where.pop("FLYWHEEL_DEV_MODE", None)  # the services' setting, not the tests'
    return env | where | {"FLYWHEEL_SCALE_STACK": "1"}


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
    launcher = [sys.executable, str(LAUNCHER)]
    try:
        subprocess.run([*launcher, "up"], check=True, cwd=ROOT, env=env)
        tests = [sys.executable, "-m", "pytest", "tests/scale", *sys.argv[1:]]
        return subprocess.run(tests, cwd=ROOT, env=env).returncode
    finally:
        subprocess.run([*launcher, "down"], cwd=ROOT, env=env)


if __name__ == "__main__":
    sys.exit(main())
