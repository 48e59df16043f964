"""Monitoring's HTTP routes: drift statistics, alerts and a readable report."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException
from fastapi.responses import HTMLResponse

from flywheel.common.problems import problems
from flywheel.monitoring.report import render_report
from flywheel.monitoring.watch import Watch


def drift_summary(watch: Watch, model_name: str) -> dict[str, Any]:
    """One model's figures: a classifier's accuracy (rolling and training), a regressor's MAE (the other None)."""
    monitor = watch.monitors[model_name]
    reference = monitor.reference
    figure, value = monitor.errors.figure, monitor.errors.value
    return {
        "model_name": model_name,
        "task": reference.task if reference else None,
        "reference": None
        if reference is None
        else {
            "model_version": reference.model_version,
            "feature_set_version": reference.feature_set_version,
            "dataset": reference.dataset,
            "dataset_version": reference.dataset_version,
            "rows": len(next(iter(reference.features.values()), [])),
            "train_accuracy": reference.train_accuracy,
            "train_mae": reference.train_mae,
        },
        "window_size": len(monitor.window),
        "predictions_seen": monitor.predictions_seen,
        "labels_joined": monitor.labels_joined,
        "rolling_accuracy": value if figure == "accuracy" else None,
        "rolling_mae": value if figure == "mae" else None,
        "features": [
            {
                "feature": v.feature,
                "kind": v.kind,
                "psi": v.psi,
                "test_statistic": v.test_statistic,
                "p_value": v.p_value,
                "p_corrected": v.p_corrected,
                "js": v.js,
                "alert": v.alert,
                "retrain": v.retrain,
            }
            for v in monitor.last_verdicts
        ],
        "drift_events": [d.model_dump(mode="json") for d in monitor.drift_events[-20:]],
    }


def create_router(watch: Watch) -> APIRouter:
    router = APIRouter(tags=["monitoring"])

    @router.get("/drift", responses=problems(404))
    async def get_drift(model: str | None = None) -> dict[str, Any]:
        """Latest drift statistics per feature, per monitored model (or one with ``?model=``)."""
        if model is not None and model not in watch.monitors:
            raise HTTPException(404, f"model {model[:80]!r} is not monitored yet; monitored: {sorted(watch.monitors)}")
        names = [model] if model else sorted(watch.monitors)
        return {"models": [drift_summary(watch, name) for name in names]}

    @router.get("/alerts")
    async def get_alerts(open_only: bool = False) -> dict[str, Any]:
        """Open alerts and the recent history, newest first."""
        opened = [a.model_dump(mode="json") for m in watch.monitors.values() for _, a in m.alerts.open.values()]
        history = sorted(
            (a for m in watch.monitors.values() for a in m.alerts.history), key=lambda a: a.occurred_at, reverse=True
        )
        return {"open": opened, "history": [] if open_only else [a.model_dump(mode="json") for a in history[:200]]}

    @router.get("/report", response_class=HTMLResponse)
    async def get_report() -> HTMLResponse:
        """An HTML drift report: distributions, statistics, and the timeline of accuracy, drift and versions."""
        return HTMLResponse(render_report(watch))

    return router
