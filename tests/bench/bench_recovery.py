"""Recovery of the closed loop: `make demo`'s concept-change scenario, run three times in a row.

Each run streams the demo's loan applications at its rate with labels 1-5 s late, changes the
concept, and measures how many labelled records and seconds monitoring needed to see it, the time
from the change to the retrained champion at 100% of traffic, and the served accuracy before,
during and after. Each run starts from the concept the previous one ended on, as `make demo` does
on the stack it finds. There is no baseline in the same run: the figures are the loop's own, and
their spread over the runs says how much one run's figure can be trusted.
"""

from __future__ import annotations

import io

from rich.console import Console

from flywheel.demo.scenario import Scenario, ScenarioResult
from tests.bench.support import spread, table
from tests.e2e.conftest import on_this_stack

RUNS = 3
PHASES = ("before", "during", "after")


def figures(result: ScenarioResult) -> dict[str, float | None]:
    delay = result.detection_delay
    return {
        "detection delay (records sent)": None if delay is None else float(delay[0]),
        "detection delay (s)": None if delay is None else delay[1],
        "time to recovery (s)": result.time_to_recovery,
        **{f"served accuracy {phase} (%)": _percent(result.served.get(phase)) for phase in PHASES},
    }


def _percent(value: float | None) -> float | None:
    return None if value is None else 100 * value


async def main() -> None:
    runs: list[dict[str, float | None]] = []
    for run in range(1, RUNS + 1):
        scenario_config = on_this_stack()  # what `make demo` runs
        # the scenario's narration goes to a buffer: printing it would slow the side it measures
        result = await Scenario(scenario_config, Console(file=io.StringIO(), width=140)).run()
        runs.append(figures(result))
        closed = "closed" if result.closed else "did NOT close"
        print(
            f"   run {run}: concept {scenario_config.function_before} -> {scenario_config.function_after}, "
            f"the loop {closed}, champion v{result.first_champion} -> v{result.new_champion}"
        )
    rows = [
        (name, spread([r[name] for r in runs]), *("-" if r[name] is None else f"{r[name]:.1f}" for r in runs))
        for name in runs[0]
    ]
    table(rows, ("measure", "min / median / max", *(f"run {i}" for i in range(1, RUNS + 1))))
