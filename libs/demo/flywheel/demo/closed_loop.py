"""`make demo`: run the closed-loop scenario on the running stack and print its report.

The same concept change runs twice, side by side: once for ``loans-approval`` (``model.yaml``: the
batch retrain alone recovers), once for ``loans-approval-challenged`` (``challenged.yaml``: an online
challenger learns the labelled answers, is promoted first, and the batch retrain replaces it).
"""

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

PHASES = ("before", "during", "first 60 s", "after", "after the batch retrain")
CHALLENGED = {"model_name": "loans-approval-challenged", "model_spec": "challenged", "until_batch": True}


def figures(result: ScenarioResult) -> dict[str, float | None]:
    """The scenario's figures by name: what the demo's comparison and `make bench` print."""
    delay, measure = result.detection_delay, result.measure
    percent = measure.name == "accuracy"

    def shown(value: float | None) -> float | None:
        return None if value is None else (100 * value if percent else value)

    return {
        "detection delay (records sent)": None if delay is None else float(delay[0]),
        "detection delay (s)": None if delay is None else delay[1],
        "time to recovery (s)": result.time_to_recovery,
        "time to the batch retrain as champion (s)": result.time_to_batch_champion,
        **{
            f"served {measure.name} {phase}{' (%)' if percent else ''}": shown(result.served.get(phase))
            for phase in PHASES
        },
    }


def compare(results: dict[str, ScenarioResult], console: Console) -> None:
    """The scenarios' figures side by side, one column each."""
    table = Table(title="The same concept change: batch retrain alone, and with the online challenger")
    table.add_column("measure")
    for name in results:
        table.add_column(name, justify="right")
    named = {name: figures(result) for name, result in results.items()}
    for measure in next(iter(named.values())):
        table.add_row(measure, *("-" if f[measure] is None else f"{f[measure]:.1f}" for f in named.values()))
    recovered_by = [_recovered_by(result) for result in results.values()]
    table.add_row("recovered first by", *recovered_by)
    console.print(table)


def _recovered_by(result: ScenarioResult) -> str:
    if result.promotion is None:
        return "none"
    return "online snapshot" if result.online_promotion is result.promotion else "batch retrain"


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
    if result.online_promotion is not None:
        table.add_row("first promoted: an online snapshot", f"{result.online_promotion.at - result.change_at:.1f} s")
    if result.batch_promotion is not None and result.time_to_batch_champion is not None:
        table.add_row("the batch retrain champion after", f"{result.time_to_batch_champion:.1f} s")
    for phase in PHASES:
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
    parser.add_argument("--batch-only", action="store_true", help="skip the run with the online challenger")
    args = parser.parse_args()
    console = Console()
    runs = {"batch retrain alone": ScenarioConfig(rate_per_s=args.rate, stable_records=args.stable)}
    if not args.batch_only:
        runs["with the online challenger"] = ScenarioConfig(
            rate_per_s=args.rate, stable_records=args.stable, **CHALLENGED
        )
    results = {}
    for name, config in runs.items():
        console.rule(f"[bold]Flywheel: the closed loop, {name} ({config.model_name})")
        results[name] = asyncio.run(Scenario(config, console).run())
        report(results[name], config, console)
    if len(results) > 1:
        compare(results, console)
    sys.exit(0 if all(result.closed for result in results.values()) else 1)


if __name__ == "__main__":
    main()
