"""Recovery of the closed loop: `make demo`'s concept-change scenario, batch retrain alone and with the online
challenger, side by side, three times each.

Each run streams the demo's loan applications at 80 a second with labels 1 s late, changes the
concept, and measures how many labelled records and seconds monitoring needed to see it, the time
from the change to the first new champion at 100% (for the challenged model, its online snapshot;
then the batch retrain that replaces it), and the served accuracy before, during, over the first
60 s after the change, and after. Each run starts from the concept the previous one ended on, as
`make demo` does on the stack it finds. The two kinds run one after the other on one stack, so
their figures compare; their spread over the runs says how much one run's figure can be trusted.
"""

from __future__ import annotations

import io

from rich.console import Console

from flywheel.demo.closed_loop import CHALLENGED, figures
from flywheel.demo.scenario import Scenario
from tests.bench.support import spread, table
from tests.e2e.conftest import on_this_stack

RUNS = 3
KINDS = {"batch alone": {}, "online challenger": CHALLENGED}


async def main() -> None:
    runs: dict[str, list[dict[str, float | None]]] = {kind: [] for kind in KINDS}
    for run in range(1, RUNS + 1):
        for kind, overrides in KINDS.items():
            config = on_this_stack(label_delay_s=(1.0, 1.0), **overrides)
            # the scenario's narration goes to a buffer: printing it would slow the side it measures
            result = await Scenario(config, Console(file=io.StringIO(), width=140)).run()
            runs[kind].append(figures(result))
            closed = "closed" if result.closed else "did NOT close"
            print(
                f"   run {run}, {kind}: concept {config.function_before} -> {config.function_after}, the loop "
                f"{closed}, champion v{result.first_champion} -> v{result.new_champion}"
                + (" (online snapshot first)" if result.online_promotion is not None else "")
            )
    measures = list(runs["batch alone"][0])
    rows = [(name, *(spread([r[name] for r in runs[kind]]) for kind in KINDS)) for name in measures]
    table(rows, ("measure (min / median / max)", *KINDS))
