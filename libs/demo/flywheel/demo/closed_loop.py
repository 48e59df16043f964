"""`make demo`: run the closed-loop scenario on the running stack and print its report."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.tree import Tree

from flywheel.demo.scenario import Scenario, ScenarioConfig, ScenarioResult


def report(result: ScenarioResult, config: ScenarioConfig, console: Console) -> None:
    """The end of the demo: what happened, how fast, how well, and where to look."""
    table = Table(title="Closed loop: what happened", show_header=True)
    table.add_column("measure")
    table.add_column("value", justify="right")
    delay = result.detection_delay
    table.add_row("first champion", f"v{result.first_champion}")
    table.add_row("concept change at record", str(result.change_record))
    table.add_row("detection delay", "not detected" if delay is None else f"{delay[0]} records, {delay[1]:.1f} s")
    ttr = result.time_to_recovery
    table.add_row(
        "time to recovery (change -> new champion at 100%)", "not recovered" if ttr is None else f"{ttr:.1f} s"
    )
    table.add_row("new champion", f"v{result.new_champion}" if result.new_champion else "none")
    table.add_row("rollout steps seen", str(len(result.rollout_steps)))
    measure = result.measure
    for phase in ("before", "during", "after"):
        table.add_row(f"served {measure.name} {phase}", measure.show(result.served.get(phase)))
    console.print(table)

    if result.lineage:
        tree = Tree(f"[bold]lineage of {config.model_name} v{result.new_champion}")
        for key, value in result.lineage.items():
            text = json.dumps(value, default=str)
            tree.add(f"[cyan]{key}[/cyan]: {text[:160]}{'…' if len(text) > 160 else ''}")
        console.print(tree)
    if result.why:
        console.print(why_lines(result.why))

    console.print(
        Panel.fit(
            "MLflow UI            http://127.0.0.1:5000  (flywheel-admin; make up: .stack/mlflow-users.json;"
            " compose: .secrets)\n"
            "Drift report         http://127.0.0.1:8006/report\n"
            "MinIO console        http://127.0.0.1:9001  (make up: flywheel / flywheel-secret; compose: .secrets)\n"
            "API docs             http://127.0.0.1:800{1..6}/docs  (ingestion, features, training, registry,"
            " serving, monitoring)\n"
            "Topics (AsyncAPI)    http://127.0.0.1:800{1..6}/asyncapi",
            title="where to look",
        )
    )


def why_lines(why: dict[str, Any]) -> Tree:
    """The registry's why of the new champion, briefly: one line per event, its time after the one before.

    >>> story = {"model_name": "m", "version": "2", "holes": [], "steps": [
    ...     {"since_previous_s": 0, "summary": "concept drift"}, {"since_previous_s": 95.2, "summary": "run r"}]}
    >>> [str(child.label) for child in why_lines(story).children]
    ['[dim]+   0.0s[/dim] concept drift', '[dim]+  95.2s[/dim] run r', '[green]no hole in the chain']
    """
    tree = Tree(f"[bold]why {why.get('model_name')} v{why.get('version')} (flywheel why)")
    for step in why.get("steps") or []:
        tree.add(f"[dim]+{step.get('since_previous_s') or 0:6.1f}s[/dim] {escape(str(step.get('summary', '')))[:150]}")
    holes = why.get("holes") or []
    tree.add("[green]no hole in the chain" if not holes else f"[bold red]holes: {escape('; '.join(holes))[:300]}")
    return tree


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=ScenarioConfig.rate_per_s, help="applications per second")
    parser.add_argument("--stable", type=int, default=ScenarioConfig.stable_records, help="records before the change")
    args = parser.parse_args()
    config = ScenarioConfig(rate_per_s=args.rate, stable_records=args.stable)
    console = Console()
    console.rule("[bold]Flywheel: the closed loop")
    result = asyncio.run(Scenario(config, console).run())
    report(result, config, console)
    sys.exit(0 if result.closed else 1)


if __name__ == "__main__":
    main()
