"""The plan of the stack: how many Kafka nodes and service replicas, and the addresses every process is given.

FLYWHEEL_STACK_BROKERS=3 (`make up BROKERS=3`) runs three KRaft nodes, each broker and controller, one
quorum of three voters; topics get replication factor 3 and min.insync.replicas 2.
FLYWHEEL_STACK_REPLICAS=2 (`make up REPLICAS=2`) runs each service twice, the second 100 ports up.
``up`` keeps the plan in .stack/data/plan.json for status and down; changing BROKERS needs a fresh .stack/data.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from .paths import STACK
from .ports import HOST, KAFKA_CONTROLLER_PORT, KAFKA_PORT, MINIO_PORT, MLFLOW_PORT

PLAN_FILE = STACK / "data" / "plan.json"  # wiped with the data it describes


def _plan(name: str) -> int:
    """How many brokers or service replicas: from the environment (``make up BROKERS=3``), else the plan
    ``up`` kept for this stack, else one."""
    if value := os.environ.get(f"FLYWHEEL_STACK_{name.upper()}"):
        return int(value)
    kept = json.loads(PLAN_FILE.read_text()) if PLAN_FILE.exists() else {}
    return int(kept.get(name, 1))


BROKERS, REPLICAS = _plan("brokers"), _plan("replicas")
REPLICATION = min(3, BROKERS)
MIN_INSYNC = 2 if BROKERS >= 3 else 1  # a write survives one broker lost, and is refused with two


def keep_plan() -> None:
    """Write the plan down for the ``status`` and ``down`` that come without it in their environment."""
    PLAN_FILE.parent.mkdir(parents=True, exist_ok=True)
    PLAN_FILE.write_text(json.dumps({"brokers": BROKERS, "replicas": REPLICAS}) + "\n")


@dataclass(frozen=True)
class KafkaNode:
    """One KRaft node (broker and controller in one process); node 1 is a one-node stack's Kafka."""

    id: int

    @property
    def name(self) -> str:
        return "kafka" if self.id == 1 else f"kafka-{self.id}"

    @property
    def port(self) -> int:
        return KAFKA_PORT + 2 * (self.id - 1)

    @property
    def controller_port(self) -> int:
        return KAFKA_CONTROLLER_PORT + 2 * (self.id - 1)

    @property
    def data(self) -> Path:
        return STACK / "data" / self.name

    @property
    def config(self) -> Path:
        return STACK / "kafka" / ("server.properties" if self.id == 1 else f"server-{self.id}.properties")


KAFKA_NODES = [KafkaNode(i) for i in range(1, BROKERS + 1)]
KAFKA_BOOTSTRAP = ",".join(f"{HOST}:{node.port}" for node in KAFKA_NODES)

SHARED_ENV = {
    # `make up` and `make demo` run a development stack: the services accept the well-known dev
    # credentials (flywheel.common.auth). A deployment (docker compose) gives each principal its own.
    "FLYWHEEL_DEV_MODE": "true",
    "FLYWHEEL_KAFKA_BOOTSTRAP_SERVERS": KAFKA_BOOTSTRAP,
    "FLYWHEEL_S3_ENDPOINT_URL": f"http://{HOST}:{MINIO_PORT}",
    "FLYWHEEL_MLFLOW_TRACKING_URI": f"http://{HOST}:{MLFLOW_PORT}",
}
