"""How ``flywheel maturity`` shows the registry's maturity report: a bar per area, each criterion with its evidence."""

from __future__ import annotations

from typing import Any

from rich.console import Group, RenderableType
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

TOP = 3
BAR_WIDTH = 24


def area_bar(area: dict[str, Any]) -> Table:
    """One line: the area's title, its level as a bar out of 3, and the level as a figure."""
    level = int(area.get("level", 0))
    line = Table.grid(padding=(0, 2))
    line.add_column(width=22)
    line.add_column(width=BAR_WIDTH)
    line.add_column()
    style = "green" if level == TOP else "yellow" if level else "red"
    bar = ProgressBar(total=TOP, completed=level, width=BAR_WIDTH, complete_style=style, finished_style=style)
    line.add_row(Text(str(area.get("title", area.get("area"))), style="bold"), bar, Text(f"level {level}/{TOP}"))
    return line


def criterion_line(criterion: dict[str, Any]) -> Text:
    """``✓ L2 reproducible lineage: yes — run r1 records ...``"""
    met = bool(criterion.get("met"))
    line = Text("  ✓ " if met else "  ✗ ", style="green" if met else "bold red")
    line.append(f"L{criterion.get('level')} {criterion.get('title')}", style="bold" if met else "")
    line.append(f": {criterion.get('evidence', '')}", style="" if met else "dim")
    return line


def maturity_view(report: dict[str, Any]) -> RenderableType:
    """The whole report: per area its bar and criteria; then the overall level and what the next one lacks.

    >>> view = maturity_view({"level": 0, "level_name": "manual", "next_level": 1, "missing": ["Data: x"],
    ...     "areas": [{"area": "data", "title": "Data", "level": 0, "missing": ["x"],
    ...                "criteria": [{"level": 1, "title": "x", "met": False, "evidence": "no — none"}]}]})
    >>> len(view.renderables)
    6
    """
    scope = report.get("model") or "the whole deployment"
    since = f" since {report['since']}" if report.get("since") else ""
    parts: list[RenderableType] = [Text(f"MLOps maturity of {scope}{since}", style="bold underline")]
    for area in report.get("areas", []):
        parts.append(area_bar(area))
        parts.extend(criterion_line(c) for c in area.get("criteria", []))
    level, name = report.get("level", 0), report.get("level_name", "")
    parts.append(Text(f"\nOverall: level {level}/{TOP} — {name}", style="bold"))
    if report.get("next_level"):
        missing = report.get("missing") or []
        parts.append(Text(f"Missing for level {report['next_level']}:", style="bold yellow"))
        parts.extend(Text(f"  • {item}") for item in missing)
    return Group(*parts)
