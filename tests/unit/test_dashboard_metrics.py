"""The Grafana dashboard and Prometheus config only name what the services really export."""

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
    scrape = yaml.safe_load((ROOT / "infra" / "prometheus" / config).read_text())["scrape_configs"]
    targets = {t for job in scrape for group in job["static_configs"] for t in group["targets"]}
    ports = {int(t.rsplit(":", 1)[1]) for t in targets}
    assert ports == set(SERVICES.values())
    if config == "prometheus.yml":
        assert targets == {f"{service}:{port}" for service, port in SERVICES.items()}
