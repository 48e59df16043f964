"""The six services, each run as `python -m flywheel.<name>`, once per replica of the plan."""

from __future__ import annotations

import os
import sys

from .component import Component, http_ok
from .credentials import kafka_env, registry_command_secret, registry_webhook_secret, store_env, tracking_env
from .paths import ROOT
from .plan import REPLICAS, SHARED_ENV
from .ports import HOST, SERVICE_PORTS, replica_ports


def service_components() -> list[Component]:
    """Every service of replica 1, then every service of replica 2, and so on."""
    return [
        service_component(name if replica == 1 else f"{name}-{replica}", name, port)
        for replica in range(1, REPLICAS + 1)
        for name, port in replica_ports(replica).items()
    ]


def replica_waves() -> list[list[str]]:
    """The services' names, one list per replica: the launcher starts a replica once the one before it is
    healthy. Twelve processes starting at once on two cores kept a second member out of its group for
    minutes (each rebalance ended without it), past the 180 s health wait; one replica at a time joins
    groups whose first member is already settled."""
    return [
        [name if replica == 1 else f"{name}-{replica}" for name in replica_ports(replica)]
        for replica in range(1, REPLICAS + 1)
    ]


def service_component(component_name: str, name: str, port: int) -> Component:
    return Component(
        component_name,
        port,
        (lambda: [sys.executable, "-m", f"flywheel.{name}"]),
        http_ok(f"http://{HOST}:{port}/health"),
        # a service rebuilds its state before it answers (serving's online view, monitoring's
        # windows): on a loaded 2-core machine that took over 60 s
        180,
        f"http://{HOST}:{port}",
        env={
            **SHARED_ENV,
            **store_env(name),
            **tracking_env(name),
            **kafka_env(name),
            f"{name.upper()}_PORT": str(port),
            f"{name.upper()}_LOG_FORMAT": "json",
            f"{name.upper()}_DATASETS_DIR": os.environ.get("FLYWHEEL_STACK_DATASETS_DIR", str(ROOT / "datasets")),
            # serving calls the registry's API: this stack's, wherever its port was moved
            **({"SERVING_REGISTRY_URL": f"http://{HOST}:{SERVICE_PORTS['registry']}"} if name == "serving" else {}),
            **(registry_secrets(port) if name == "registry" else {}),
        },
    )


def registry_secrets(port: int) -> dict[str, str]:
    """Where MLflow delivers alias moves (each replica points it at itself as it starts), signed with the secret
    every replica shares; and the secret their commands are signed with, shared too."""
    return {
        "REGISTRY_WEBHOOK_URL": f"http://{HOST}:{port}/mlflow/webhook",
        "REGISTRY_WEBHOOK_SECRET": registry_webhook_secret(),
        "REGISTRY_COMMAND_SECRET": registry_command_secret(),
    }
