"""The stack's ports: FLYWHEEL_STACK_PORT_OFFSET=<n> moves every one n up (a second stack beside the first),
FLYWHEEL_STACK_<NAME>_PORT moves one."""

from __future__ import annotations

import os

HOST = "127.0.0.1"
PORT_OFFSET = int(os.environ.get("FLYWHEEL_STACK_PORT_OFFSET", "0"))


def _port(name: str, default: int) -> int:
    return int(os.environ.get(f"FLYWHEEL_STACK_{name.upper()}_PORT", default + PORT_OFFSET))


KAFKA_PORT = _port("kafka", 9092)
KAFKA_CONTROLLER_PORT = _port("kafka_controller", 9093)
MINIO_PORT = _port("minio", 9000)
MINIO_CONSOLE_PORT = _port("minio_console", 9001)
MLFLOW_PORT = _port("mlflow", 5000)
SERVICE_PORTS = {
    name: _port(name, default)
    for name, default in [
        ("ingestion", 8001),
        ("features", 8002),
        ("training", 8003),
        ("registry", 8004),
        ("serving", 8005),
        ("monitoring", 8006),
    ]
}


def replica_ports(replica: int) -> dict[str, int]:
    """Each service's port in replica ``replica`` (1: the service's own; each further one 100 up)."""
    return {name: port + 100 * (replica - 1) for name, port in SERVICE_PORTS.items()}
