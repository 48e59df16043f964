"""The maturity model checked live around the demo's loop: ``flywheel maturity MODEL --since T --json`` on the
stack, once as the scenario starts streaming (its first model serves, nothing has drifted) and once after.

``since`` is the test's start: what an earlier test or demo left on a shared stack does not count, so the
report before the stream shows only what this test did so far and the rise after it is the loop's.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from flywheel.cli.maturity import maturity_view
from flywheel.demo.scenario import Scenario, ScenarioConfig

FLYWHEEL = Path(sys.executable).parent / "flywheel"


async def maturity(config: ScenarioConfig, since: datetime) -> dict[str, Any]:
    """The registry's maturity report of the scenario's model, through the CLI (its own process), as JSON."""
    command = [str(FLYWHEEL), "maturity", config.model_name, "--since", since.isoformat(), "--json"]
    env = {**os.environ, "FLYWHEEL_REGISTRY_URL": config.registry_url}
    process = await asyncio.create_subprocess_exec(
        *command, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=180)
    assert process.returncode == 0, f"flywheel maturity failed ({process.returncode}): {err.decode()}"
    return json.loads(out)


def levels(report: dict[str, Any]) -> dict[str, int]:
    return {area["area"]: area["level"] for area in report["areas"]}


def criterion(report: dict[str, Any], key: str) -> dict[str, Any]:
    return next(c for area in report["areas"] for c in area["criteria"] if c["key"] == key)


def show(report: dict[str, Any], console: Console) -> None:
    console.print(maturity_view(report))


class MeasuredScenario(Scenario):
    """The demo's scenario, with the maturity of its model taken as the stream starts (after the first model)."""

    def __init__(self, config: ScenarioConfig, console: Console, since: datetime) -> None:
        super().__init__(config, console)
        self.since = since
        self.before: dict[str, Any] | None = None

    async def _stream(self) -> None:
        self.before = await maturity(self.config, self.since)
        await super()._stream()
