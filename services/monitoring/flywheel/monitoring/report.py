"""The HTML drift report a person reads: no JavaScript, no network, inline SVG."""

from __future__ import annotations

import html

import numpy as np

from flywheel.monitoring.alerts import Band
from flywheel.monitoring.monitor import ModelMonitor
from flywheel.monitoring.performance import NAMES, shown
from flywheel.monitoring.watch import Watch

STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#f3f3f3}
.alert{color:#b00020;font-weight:bold}.ok{color:#2e7d32}.feature{display:inline-block;margin:6px;text-align:center}
h2{border-bottom:2px solid #444}
"""


def _histogram_svg(reference: np.ndarray, current: np.ndarray, bins: int = 12) -> str:
    ref, cur = reference[~np.isnan(reference)], current[~np.isnan(current)]
    if len(ref) == 0:
        return ""
    low, high = float(np.min(ref)), float(np.max(ref))
    if len(cur):
        low, high = min(low, float(np.min(cur))), max(high, float(np.max(cur)))
    edges = np.linspace(low, high if high > low else low + 1, bins + 1)
    r = np.histogram(ref, edges)[0] / max(len(ref), 1)
    c = np.histogram(cur, edges)[0] / max(len(cur), 1) if len(cur) else np.zeros(bins)
    top = max(float(r.max()), float(c.max()), 1e-9)
    width, height, bar = 240, 80, 240 / bins
    rects = []
    for i in range(bins):
        rh, ch = r[i] / top * height, c[i] / top * height
        for left, tall, colour in ((i * bar, rh, "#90a4ae"), (i * bar + bar / 2, ch, "#ef6c00")):
            rects.append(
                f'<rect x="{left:.1f}" y="{height - tall:.1f}" width="{bar / 2:.1f}" height="{tall:.1f}" '
                f'fill="{colour}"/>'
            )
    return f'<svg width="{width}" height="{height}" role="img">{"".join(rects)}</svg>'


def _timeline_svg(monitor: ModelMonitor) -> str:
    figure = monitor.errors.figure
    points = [p for p in monitor.timeline if p.kind == figure and p.value is not None]
    marks = [p for p in monitor.timeline if p.kind in {"concept_drift", "champion"}]
    if len(points) < 2:
        return f"<p>Not enough labels yet for a {NAMES[figure]} timeline.</p>"
    start = min(p.at for p in monitor.timeline).timestamp()
    end = max(p.at for p in monitor.timeline).timestamp()
    span = max(end - start, 1e-9)
    width, height = 720, 160
    top = _top(figure, [p.value for p in points if p.value is not None], monitor.performance.band())

    def x(at: float) -> float:
        return (at - start) / span * width

    def y(value: float) -> float:
        return height - max(0.0, min(1.0, value / top)) * height

    path = " ".join(f"{x(p.at.timestamp()):.1f},{y(p.value):.1f}" for p in points)  # type: ignore[arg-type]
    lines = "".join(
        f'<line x1="{x(m.at.timestamp()):.1f}" x2="{x(m.at.timestamp()):.1f}" y1="0" y2="{height}" '
        f'stroke="{"#b00020" if m.kind == "concept_drift" else "#2e7d32"}" stroke-dasharray="4"><title>'
        f"{html.escape(m.detail)} (v{m.model_version})</title></line>"
        for m in marks
    )
    return (
        f'<svg width="{width}" height="{height}" style="border:1px solid #ccc">'
        f'<polyline points="{path}" fill="none" stroke="#1565c0" stroke-width="2"/>{lines}</svg>'
        f"<p>Blue: rolling {NAMES[figure]} on delayed labels (0 to {shown(figure, top)}). "
        "Dashed red: concept drift. Dashed green: new champion.</p>"
    )


def _top(figure: str, values: list[float], band: Band | None) -> float:
    """The timeline's top: accuracy's 1; for MAE, room for the worst figure and the alert threshold.

    >>> _top("accuracy", [0.9], None), _top("mae", [2.0, 3.0], Band(12.5, 11.5))
    (1.0, 15.0)
    """
    if figure == "accuracy":
        return 1.0
    return max([*values, band.raise_at if band else 0.0, 1e-9]) * 1.2


def _model_section(monitor: ModelMonitor) -> str:
    reference = monitor.reference
    head = f"<h2>{html.escape(monitor.model_name)}</h2>"
    if reference is None:
        return head + "<p>No champion yet: nothing to compare traffic with.</p>"
    figure, value, trained = monitor.errors.figure, monitor.errors.value, monitor.performance.trained
    name = NAMES[figure]
    facts = (
        f"<p>Champion version <b>{reference.model_version}</b> ({reference.task}), trained on dataset "
        f"<b>{html.escape(reference.dataset)}</b> version <code>{reference.dataset_version}</code>"
        f" (training {name} {'n/a' if trained is None else shown(figure, trained)}). "
        f"Window: {len(monitor.window)} predictions; labels joined: {monitor.labels_joined}; rolling {name}: "
        f"{'n/a' if value is None else shown(figure, value)}.</p>"
    )
    rows = "".join(
        f"<tr><td style='text-align:left'>{html.escape(v.feature)}</td><td>{v.kind}</td><td>{v.psi:.3f}</td>"
        f"<td>{v.test_statistic:.3f}</td><td>{v.p_corrected:.3g}</td>"
        f"<td>{'' if v.js is None else f'{v.js:.3f}'}</td>"
        f"<td class='{'alert' if v.alert else 'ok'}'>{'DRIFT' if v.alert else 'ok'}"
        f"{' → retrain' if v.retrain else ''}</td></tr>"
        for v in monitor.last_verdicts
    )
    table = (
        "<table><tr><th>feature</th><th>kind</th><th>PSI</th><th>KS / JS</th><th>p (Bonferroni)</th>"
        f"<th>JS</th><th>verdict</th></tr>{rows}</table>"
        if rows
        else "<p>No data-drift check yet (needs a full window of served predictions).</p>"
    )
    current = monitor.window.columns()
    plots = "".join(
        f"<div class='feature'>{_histogram_svg(reference.features[name], current[name])}<br>{html.escape(name)}</div>"
        for name in reference.features
    )
    drift_rows = "".join(
        f"<tr><td>{d.occurred_at:%H:%M:%S}</td><td>{d.kind}</td><td style='text-align:left'>"
        f"{html.escape(', '.join(f'{f.feature} {f.statistic}={f.value:.3f}' for f in d.features))}</td>"
        f"<td>{'yes' if d.retrain else 'no'}</td><td>{d.model_version}</td></tr>"
        for d in monitor.drift_events[-20:]
    )
    drifts = (
        f"<h3>Drift events</h3><table><tr><th>time</th><th>kind</th><th>evidence</th><th>retrain</th>"
        f"<th>model version</th></tr>{drift_rows}</table>"
        if drift_rows
        else "<p>No drift events.</p>"
    )
    return (
        head
        + facts
        + "<h3>Per-feature statistics</h3>"
        + table
        + "<h3>Distributions: reference (grey) vs current window (orange)</h3>"
        + plots
        + "<h3>Timeline</h3>"
        + _timeline_svg(monitor)
        + drifts
    )


def render_report(watch: Watch) -> str:
    """The whole report: one section per monitored model."""
    sections = "".join(_model_section(m) for m in watch.monitors.values()) or "<p>No model monitored yet.</p>"
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>Flywheel drift report</title>"
        f"<style>{STYLE}</style></head><body><h1>Flywheel drift report</h1>{sections}</body></html>"
    )
