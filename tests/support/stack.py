"""The running stack as the launcher (``infra/launcher/``) knows it: one port table, one pid directory.

Tests import the launcher's own table, so a second stack started with
``FLYWHEEL_STACK_<NAME>_PORT`` and ``FLYWHEEL_STACK_DIR`` is the stack the tests talk to.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

from infra.launcher import ports
from infra.launcher.commands import components
from infra.launcher.component import Component, http_ok
from infra.launcher.credentials import admin_logins
from infra.launcher.paths import ROOT
from infra.launcher.plan import REPLICAS
from infra.launcher.ports import HOST
from infra.launcher.processes import group_members, running_pid, start, wait_healthy

LAUNCHER = ROOT / "infra" / "stack.py"
SERVICE_PORTS: dict[str, int] = dict(ports.SERVICE_PORTS)


def log_in_as_admin() -> None:
    """Tests and benches read and write Kafka and MLflow as their admins, with the passwords the launcher made for
    this stack (``.stack/kafka-users.json``, ``.stack/mlflow-users.json``): Flywheel's clients, ``MlflowSettings``
    and MLflow read the logins from the environment."""
    for variable, value in admin_logins().items():
        os.environ.setdefault(variable, value)


def service_url(name: str) -> str:
    return f"http://{HOST}:{SERVICE_PORTS[name]}"


def replica_urls(name: str) -> list[str]:
    """Every replica of a service on this stack (``make up REPLICAS=2``: the second 100 ports up)."""
    return [f"http://{HOST}:{ports.replica_ports(r)[name]}" for r in range(1, REPLICAS + 1)]


def component(name: str) -> Component:
    [found] = [c for c in components() if c.name == name]
    return found


def recorded_pid(name: str) -> int:
    """The process group the launcher started for a component (its pid file); fails when it is not running."""
    pid = running_pid(component(name))
    assert pid is not None, f"{name} is not running (no live pid in {component(name).pid_file})"
    return pid


def kill(name: str, sig: signal.Signals = signal.SIGKILL) -> int:
    """Signal a component's whole process group, by the pid the launcher recorded; returns that pid."""
    pid = recorded_pid(name)
    os.killpg(pid, sig)
    if sig == signal.SIGKILL:  # gone for good before anyone restarts it (its port is free again)
        deadline = time.monotonic() + 15
        while group_members(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
    return pid


def launch(command: str, *names: str, env: dict[str, str] | None = None) -> None:
    """Run the launcher (``up``, ``restart``, ...) with this environment and ``env``; it returns once all is healthy."""
    subprocess.run(
        [sys.executable, str(LAUNCHER), command, *names], check=True, cwd=ROOT, env={**os.environ, **(env or {})}
    )


def restart(*names: str, env: dict[str, str] | None = None) -> None:
    """Stop what is left of the components, start them again (with ``env`` added), and wait until they are healthy."""
    launch("restart", *names, env=env)


@contextlib.contextmanager
def replica(name: str, port: int) -> Iterator[str]:
    """A second process of a running service, on ``port``, healthy before the body runs; its URL.

    It is the launcher's component with another name (its own pid file and log, ``<name>-2``) and
    port; it is stopped, by its process group, when the body ends.
    """
    original = component(name)
    second = dataclasses.replace(
        original,
        name=f"{name}-2",
        port=port,
        healthy=http_ok(f"http://{HOST}:{port}/health"),
        url=f"http://{HOST}:{port}",
        env={**original.env, f"{name.upper()}_PORT": str(port)},
    )
    process = start(second)
    assert process is not None, f"a {second.name} from an earlier run is still running"
    try:
        wait_healthy(second, process)
        yield second.url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        second.pid_file.unlink(missing_ok=True)
