"""How the CLI shows things: one readable line per event, trees for nested answers."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from flywheel.cli.kafka import Message

ENVELOPE = {"event_id", "event_type", "schema_version", "occurred_at", "producer", "correlation_id", "causation_id"}
SEVERITY_STYLE = {"critical": "bold red", "warning": "yellow", "info": "cyan"}


def compact(value: Any, width: int = 80) -> str:
    """A value as short JSON, cut to ``width`` characters.

    >>> compact({"age": 30, "car": "car1"})
    '{"age":30,"car":"car1"}'
    >>> compact("x" * 100, width=10)
    '"xxxxxxxx…'
    """
    text = value if isinstance(value, int | float) and not isinstance(value, bool) else None
    text = json.dumps(value, separators=(",", ":"), default=str) if text is None else str(text)
    return text if len(text) <= width else text[: width - 1] + "…"


def event_line(message: Message) -> Text:
    """One line per event: when, where, what type, its key, then its payload fields."""
    when = datetime.fromtimestamp(message.timestamp_ms / 1000, UTC).strftime("%H:%M:%S.%f")[:-3]
    line = Text()
    line.append(f"{when} ", style="dim")
    line.append(f"{message.topic}[{message.partition}]@{message.offset} ", style="dim")
    if not message.is_json:
        line.append("not JSON: ", style="bold red")
        line.append(compact(message.body, 200))
        return line
    body: dict[str, Any] = message.body
    line.append(str(body.get("event_type", "?")), style="bold")
    if severity := body.get("severity"):
        line.append(f" {str(severity).upper()}", style=SEVERITY_STYLE.get(str(severity), ""))
    if message.key is not None:
        line.append(f" key={message.key}", style="magenta")
    for name, value in body.items():
        if name in ENVELOPE or name == "severity":
            continue
        line.append(f" {name}=", style="cyan")
        line.append(compact(value))
    return line


def tree(label: str | Text, value: Any, *, first: tuple[str, ...] = ()) -> Tree:
    """A nested JSON answer as a rich Tree; ``first`` names keys shown before the others."""
    root = Tree(label)
    _grow(root, value, first)
    return root


def _grow(node: Tree, value: Any, first: tuple[str, ...]) -> None:
    if isinstance(value, dict):
        keys = [k for k in first if k in value] + [k for k in value if k not in first]
        for key in keys:
            item = value[key]
            if isinstance(item, dict | list) and item:
                _grow(node.add(Text(str(key), style="bold cyan")), item, first)
            else:
                leaf = Text()
                leaf.append(f"{key}: ", style="cyan")
                leaf.append(compact(item, 120) if not isinstance(item, str) else item)
                node.add(leaf)
    elif isinstance(value, list):
        for index, item in enumerate(value, start=1):
            if isinstance(item, dict | list):
                _grow(node.add(Text(f"#{index}", style="dim")), item, first)
            else:
                node.add(compact(item, 120) if not isinstance(item, str) else item)
    else:
        node.add(compact(value, 120))


_LINEAGE_GROUPS: dict[str, tuple[str, ...]] = {
    "data": ("dataset", "dataset_version", "dataset_versions", "manifest", "manifest_error"),
    "code": ("code_version", "model_spec", "feature_set", "feature_set_version", "seed"),
    "run": ("run_id", "model_uri", "params"),
    "metrics": ("metrics",),
    "why": ("trigger", "trigger_event_id", "correlation_id", "causation_chain", "history"),
}
_MANIFEST_KEYS = ("version", "row_count", "content_hash", "parent_version", "time_min", "time_max", "created_at")


def lineage_tree(model: str, version: str, lineage: dict[str, Any]) -> Tree:
    """A version's lineage grouped by question: what data, what code, which run, which gates, why.

    >>> t = lineage_tree("m", "2", {"status": "approved", "dataset": "loans", "run_id": "r1", "extra": 1,
    ...     "gates": [{"gate": "threshold:f1", "passed": True, "message": "f1 0.9 >= 0.8"}]})
    >>> [str(child.label).split(" ")[0] for child in t.children]
    ['status:', 'data', 'run', 'gates', 'extra:']
    """
    root = Tree(Text(f"{model} v{version}", style="bold"))
    shown = {"model_name", "version", "gates"}
    for key in ("status", "aliases"):
        if lineage.get(key):
            _grow(root, {key: lineage[key]}, ())
            shown.add(key)
    for group, keys in _LINEAGE_GROUPS.items():
        if group == "why":
            _gates(root, lineage.get("gates") or [])
        present = {k: lineage[k] for k in keys if lineage.get(k) not in (None, [], {}, "")}
        shown.update(keys)
        if not present:
            continue
        if isinstance(present.get("manifest"), dict):
            manifest = present["manifest"]
            present["manifest"] = {k: manifest[k] for k in _MANIFEST_KEYS if manifest.get(k) is not None}
        _grow(root.add(Text(group, style="bold cyan")), present["metrics"] if group == "metrics" else present, ())
    _grow(root, {k: v for k, v in lineage.items() if k not in shown}, ())
    return root


def _gates(root: Tree, gates: list[dict[str, Any]]) -> None:
    if not gates:
        return
    branch = root.add(Text("gates", style="bold cyan"))
    for gate in gates:
        passed = bool(gate.get("passed"))
        line = Text("✓ " if passed else "✗ ", style="green" if passed else "bold red")
        line.append(str(gate.get("gate", "?")), style="bold")
        if gate.get("message"):
            line.append(f"  {gate['message']}")
        branch.add(line)


ACTION_STYLE = {
    "promoted": "green",
    "rolled_back": "bold red",
    "aborted": "bold red",
    "inconclusive": "yellow",
    "started": "cyan",
}


def _figure(figures: dict[str, Any], variant: str) -> str:
    """A variant's live figures in one cell: requests, error rate, accuracy on labels, p99.

    >>> _figure({"candidate": {"requests": 120, "error_rate": 0.0, "labelled": 40, "accuracy": 0.9, "p99_ms": 4.2}},
    ...         "candidate")
    '120 req · 0.0% err · acc 0.900 (40) · p99 4.2 ms'
    >>> _figure({"champion": {"requests": 0, "error_rate": 0, "labelled": 0, "accuracy": -1.0, "p99_ms": 0}},
    ...         "champion")
    '0 req · 0.0% err · acc n/a · p99 0.0 ms'
    >>> _figure({"candidate": {"requests": 80, "error_rate": 0, "labelled": 60, "accuracy": -1.0, "mae": 12.5,
    ...          "p99_ms": 3}}, "candidate")
    '80 req · 0.0% err · mae 12.500 (60) · p99 3.0 ms'
    """
    f = figures.get(variant) or {}
    if not f:
        return ""
    labelled = int(f.get("labelled", 0))
    if f.get("mae") is not None:  # a regressor's: its mean absolute error on labels (-1: none yet)
        quality = "mae " + ("n/a" if float(f["mae"]) < 0 else f"{float(f['mae']):.3f} ({labelled})")
    else:
        accuracy = f.get("accuracy", -1.0)
        quality = "acc " + ("n/a" if accuracy is None or accuracy < 0 else f"{accuracy:.3f} ({labelled})")
    return (
        f"{int(f.get('requests', 0))} req · {100 * float(f.get('error_rate', 0)):.1f}% err · "
        f"{quality} · p99 {float(f.get('p99_ms', 0)):.1f} ms"
    )


def rollouts_table(active: list[dict[str, Any]]) -> Table:
    """The rollouts in progress, one row each, with the live figures of both variants."""
    table = Table(title="Rollouts in progress", title_justify="left")
    for column in ("model", "strategy", "step", "candidate traffic", "champion", "candidate"):
        table.add_column(column)
    for r in active:
        steps = r.get("steps")
        step = f"{r.get('step', 0)}/{len(steps) if isinstance(steps, list) else steps}" if steps else str(r.get("step"))
        figures = r.get("figures") or {}
        table.add_row(
            str(r.get("model_name")),
            str(r.get("strategy")),
            step,
            f"{100 * float(r.get('candidate_traffic') or 0):.0f}%",
            Text(f"v{r.get('champion_version')}\n{_figure(figures, 'champion')}".rstrip()),
            Text(f"v{r.get('candidate_version')}\n{_figure(figures, 'candidate')}".rstrip()),
        )
    return table


def steps_table(steps: list[dict[str, Any]]) -> Table:
    """Recent ``RolloutStepped`` events, oldest first."""
    table = Table(title="Recent rollout steps", title_justify="left")
    for column in ("at", "model", "action", "strategy", "versions", "step", "traffic", "reason"):
        table.add_column(column, overflow="fold")
    for e in steps:
        action = str(e.get("action"))
        table.add_row(
            str(e.get("occurred_at", ""))[:19].replace("T", " "),
            str(e.get("model_name")),
            Text(action, style=ACTION_STYLE.get(action, "")),
            str(e.get("strategy")),
            f"v{e.get('champion_version')} → v{e.get('candidate_version')}",
            str(e.get("step", "")),
            f"{100 * float(e.get('candidate_traffic') or 0):.0f}%",
            str(e.get("reason", "")),
        )
    return table


STAGE_STYLE = {"drift": "yellow", "request": "cyan", "run": "blue", "decision": "magenta", "rollout": "cyan"}


def span(seconds: float | None) -> str:
    """A duration as people read it.

    >>> span(0.4), span(95), span(3725), span(None)
    ('0.4s', '1m35s', '1h02m', '')
    """
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


def _details(step: dict[str, Any]) -> list[str]:
    """The key figures of a step, a few short lines: what the run was made of, each gate, the live figures."""
    f, stage = step.get("figures") or {}, step.get("stage")
    if stage == "run":
        metrics = ", ".join(f"{k} {v:.3g}" for k, v in list((f.get("metrics") or {}).items())[:4])
        return [
            f"data {', '.join(f.get('data_versions') or [])} · labels to {f.get('label_cutoff') or 'n/a'}",
            f"params {compact(f.get('params') or {}, 100)}",
            f"metrics {metrics}",
        ]
    if stage == "decision":
        gates = f.get("gates") or []
        return [f"{'✓' if g.get('passed') else '✗'} {g.get('gate')}: {g.get('message', '')}" for g in gates]
    if stage == "rollout":
        figures = f.get("live") or {}
        live = [f"{v} {_figure(figures, v)}" for v in ("candidate", "champion") if figures.get(v)]
        tests = [
            f"{m}: {t.get('candidate', 0):.3g} vs {t.get('champion', 0):.3g}, p {t.get('p_value', 1):.2g}"
            + (" (significant)" if t.get("significant") else "")
            for m, t in (f.get("tests") or {}).items()
        ]
        return live + tests
    return []


def why_timeline(story: dict[str, Any]) -> Table:
    """A version's story, one row per event: when, how long after the one before, the stage, what happened.

    >>> story = {"model_name": "m", "version": "2", "holes": [], "duration_s": 95, "steps": [
    ...     {"at": "2026-12-02T12:00:00+00:00", "stage": "drift", "summary": "concept drift", "since_previous_s": 0},
    ...     {"at": "2026-12-02T12:01:35+00:00", "stage": "run", "summary": "run r trained", "since_previous_s": 95,
    ...      "figures": {"data_versions": ["v9"], "label_cutoff": "b2", "params": {}, "metrics": {"f1": 0.9}}}]}
    >>> table = why_timeline(story)
    >>> table.row_count, table.caption
    (2, 'no hole in the chain · 1m35s from first to last')
    """
    title = f"why {story.get('model_name')} v{story.get('version')}"
    if story.get("aliases"):
        title += f" ({', '.join(story['aliases'])})"
    table = Table(title=title, title_justify="left", caption_justify="left")
    for column in ("at", "after", "stage", "what"):
        table.add_column(column, overflow="fold")
    for step in story.get("steps") or []:
        stage = str(step.get("stage"))
        what = Text(str(step.get("summary", "")))
        for line in _details(step):
            what.append(f"\n  {line}", style="dim")
        if step.get("in_loop") is False:
            what.append("\n  (after its loop)", style="dim")
        table.add_row(
            str(step.get("at", ""))[:19].replace("T", " "),
            f"+{span(step.get('since_previous_s'))}",
            Text(stage, style=STAGE_STYLE.get(stage, "green")),
            what,
        )
    holes = story.get("holes") or []
    total = f" · {span(story.get('duration_s'))} from first to last" if story.get("steps") else ""
    if holes:
        table.caption = f"{len(holes)} hole(s) in the chain{total}:\n" + "\n".join(f"  ✗ {h}" for h in holes)
        table.caption_style = "bold red"
    else:
        table.caption = f"no hole in the chain{total}"
        table.caption_style = "green"
    return table
