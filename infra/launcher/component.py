"""One process of the stack, how to tell it is healthy, and the launcher's lines of progress."""

from __future__ import annotations

import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .paths import STACK


@dataclass
class Component:
    """One process of the stack: how to start it and how to tell it is healthy."""

    name: str
    port: int
    command: Callable[[], list[str]]
    healthy: Callable[[], bool]
    timeout_s: float
    url: str
    env: dict[str, str] = field(default_factory=dict)
    prepare: Callable[[], None] | None = None
    after_start: Callable[[], None] | None = None
    infra: bool = False

    @property
    def pid_file(self) -> Path:
        return STACK / "run" / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return STACK / "logs" / f"{self.name}.log"


class SetUpFailed(Exception):
    """A component's preparation or set-up after start failed; the message says why and what to do (and holds no
    secret: never a command line)."""


class StartFailed(Exception):
    def __init__(self, component: Component, why: str, show_log: bool = True) -> None:
        super().__init__(f"{component.name} {why}")
        self.component, self.why, self.show_log = component, why, show_log


def http_ok(url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    return check


def step(name: str, message: str) -> None:
    print(f"  {name:<11} {message}", flush=True)


def run_build_step(command: list[str], env: dict[str, str] | None = None) -> None:
    """Run a download or build step; show its output only when it fails."""
    if shutil.which(command[0]) is None:
        sys.exit(f"stack: `{' '.join(command)}` failed: {command[0]} is not installed")
    result = subprocess.run(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if result.returncode != 0:
        sys.exit(f"{result.stdout}\nstack: `{' '.join(command)}` failed with code {result.returncode}")
