"""The Grafana dashboard and Prometheus config only name what the services really export."""

import ast
import importlib
import json
import re
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY

ROOT = Path(__file__).resolve().parents[2]
SERVICES = {
    "ingestion": 8001,
    "features": 8002,
    "training": 8003,
    "registry": 8004,
    "serving": 8005,
    "monitoring": 8006,
}
DASHBOARDS = sorted((ROOT / "infra" / "grafana" / "dashboards").glob("*.json"))
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
    "stateset": ("",),
    "enum": ("",),
    "unknown": ("",),
}
PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset",
    "sum", "avg", "min", "max", "count", "topk", "bottomk", "quantile", "stddev", "stdvar", "count_values", "group",
}  # fmt: skip


@pytest.fixture(scope="module")
def exported() -> set[str]:
    """Every sample name the six services expose: build each app (connects to nothing), read the registry."""
    for service in SERVICES:
        importlib.import_module(f"flywheel.{service}.app").create_app()
    names = set()
    for family in REGISTRY.collect():
        names.update(f"{family.name}{suffix}" for suffix in SUFFIXES.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


METRIC_CLASSES = {"Counter", "Gauge", "Histogram", "Summary", "Info", "Enum"}


def defined_in_code() -> dict[str, str]:
    """Every metric a ``prometheus_client`` constructor defines in services/ and libs/: name -> kind.

    Only calls of names imported from ``prometheus_client`` count (``collections.Counter`` does not).
    """
    found = {}
    for path in [*(ROOT / "services").rglob("*.py"), *(ROOT / "libs").rglob("*.py")]:
        if "tests" in path.relative_to(ROOT).parts:
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        imported = {
            alias.asname or alias.name: alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module == "prometheus_client"
            for alias in node.names
            if alias.name in METRIC_CLASSES
        }
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name) or node.func.id not in imported:
                continue
            name = node.args[0] if node.args else next((k.value for k in node.keywords if k.arg == "name"), None)
            assert isinstance(name, ast.Constant), f"{path}:{node.lineno}: a metric name that is not a literal"
            found[name.value] = imported[node.func.id].lower()
    return found


def test_every_metric_defined_in_code_is_exported_once_the_apps_are_built(exported):
    defined = defined_in_code()
    assert {"flywheel_ingestion_records_total", "flywheel_serving_predictions_total"} <= set(defined)
    missing = {
        name
        for name, kind in defined.items()
        if not any(f"{name.removesuffix('_total')}{suffix}" in exported for suffix in SUFFIXES[kind])
    }
    assert missing == set(), f"defined but not registered by any create_app(): {sorted(missing)}"


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers that are not functions,
    keywords, label names or strings."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set()
    for found in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", expr):
        word = found.group(0)
        following = expr[found.end() :].lstrip()[:1]
        if following == "(" or word in PROMQL_WORDS:
            continue
        names.add(word)
    return names


def test_metric_names_skips_functions_keywords_labels_and_strings():
    expr = 'sum by (le, a) (rate(x_bucket{route!~"/m|y_total"}[5m])) / ignoring(b) y and on(c) max(z)'
    assert metric_names(expr) == {"x_bucket", "y", "z"}


def targets(dashboard: dict) -> list[tuple[str, str]]:
    found = []
    for panel in dashboard["panels"]:
        for inner in [panel, *panel.get("panels", [])]:
            found += [(inner["title"], t["expr"]) for t in inner.get("targets", [])]
    return found


def test_there_is_a_dashboard_with_queries():
    assert DASHBOARDS
    for path in DASHBOARDS:
        assert len(targets(json.loads(path.read_text()))) >= 8


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_panel_query_names_metrics_the_services_export(path, exported):
    dashboard = json.loads(path.read_text())
    unknown = {}
    for title, expr in targets(dashboard):
        names = metric_names(expr)
        assert names, f"panel {title!r} selects no metric: {expr}"
        if missing := names - exported:
            unknown[title] = sorted(missing)
    assert unknown == {}, f"panels query metrics no service exports: {unknown}"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_panel_uses_the_provisioned_datasource(path):
    datasources = yaml.safe_load((ROOT / "infra/grafana/provisioning/datasources/prometheus.yml").read_text())
    uids = {d["uid"] for d in datasources["datasources"]}
    for panel in json.loads(path.read_text())["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] in uids, panel["title"]


@pytest.mark.parametrize("config", ["prometheus.yml", "prometheus.local.yml"])
def test_prometheus_scrapes_all_six_services(config):
    """The local stack's targets are listed; the compose deployment's are looked up by service name (every replica)."""
    scrape = yaml.safe_load((ROOT / "infra" / "prometheus" / config).read_text())["scrape_configs"]
    listed = {t for job in scrape for group in job.get("static_configs", []) for t in group["targets"]}
    looked_up = {
        f"{name}:{sd['port']}" for job in scrape for sd in job.get("dns_sd_configs", []) for name in sd["names"]
    }
    targets = listed | looked_up
    assert {int(t.rsplit(":", 1)[1]) for t in targets} == set(SERVICES.values())
    if config == "prometheus.yml":
        assert targets == looked_up == {f"{service}:{port}" for service, port in SERVICES.items()}


# What the issue asks the dashboard to show: a panel whose query selects the metric, grouped or
# labelled by what must be told apart (variant, feature, model).
LOOP_PANELS = {
    "ingestion rate": ("flywheel_ingestion_records_total", "dataset"),
    "rejects": ("flywheel_ingestion_records_total", 'outcome="rejected"'),
    "per-variant traffic": ("flywheel_serving_predictions_total", "variant"),
    "prediction latency": ("flywheel_serving_predict_seconds_bucket", "model"),
    "accuracy on labels": ("flywheel_monitoring_rolling_accuracy", "model"),
    "drift per feature": ("flywheel_monitoring_feature_psi", "feature"),
    "model versions": ("flywheel_monitoring_reference_model_version", "model"),
}


@pytest.mark.parametrize("what", LOOP_PANELS)
def test_the_dashboard_shows_the_loop(what):
    metric, told_apart = LOOP_PANELS[what]
    shown = [
        (title, expr, legend)
        for path in DASHBOARDS
        for panel in json.loads(path.read_text())["panels"]
        for title, expr, legend in [
            (panel["title"], t["expr"], t.get("legendFormat", "")) for t in panel.get("targets", [])
        ]
        if metric in metric_names(expr)
    ]
    assert shown, f"no panel shows {what} ({metric})"
    assert any(told_apart in expr or f"{{{{{told_apart}}}}}" in legend for _, expr, legend in shown), (
        f"{what}: no panel on {metric} tells {told_apart} apart: {shown}"
    )
