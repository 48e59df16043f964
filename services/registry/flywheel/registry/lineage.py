"""The lineage read model: what a version was made from and why it exists, back to the triggering event."""

from __future__ import annotations

import json
from typing import Any

from flywheel.common.datasets import DatasetCatalog
from flywheel.common.tracking import Tags
from flywheel.registry.modelstore import HISTORY, ModelStore

TRAINED_EVENT = "flywheel.trained_event_id"
DECISION_EVENT = "flywheel.decision_event_id"


def lineage(store: ModelStore, catalog: DatasetCatalog, name: str, version: str) -> dict[str, Any]:
    """A version's data, code, params, metrics and gates, and the events that led to it."""
    mv = store.version(name, version)
    described = store.describe_version(mv, store.aliases(name))
    run = store.run(mv.run_id)
    tags, params = run.data.tags, run.data.params
    dataset, dataset_version = tags.get(Tags.DATASET), tags.get(Tags.DATASET_VERSION)
    manifest, manifest_error = None, None
    learning = tags.get(Tags.LEARNING, "batch")
    try:
        if dataset_version or learning != "online":  # a snapshot learnt labelled answers, in no version
            manifest = catalog.manifest(dataset, dataset_version).model_dump(mode="json")
    except Exception as exc:
        manifest_error = f"{type(exc).__name__}: {exc}"
    chain = json.loads(tags.get(Tags.CAUSATION_CHAIN, "[]"))
    version_tags = dict(mv.tags or {})
    events = [*chain, version_tags.get(TRAINED_EVENT), version_tags.get(DECISION_EVENT)]
    history = json.loads(store.model_tags(name).get(HISTORY, "[]"))
    return {
        "model_name": name,
        "version": version,
        "status": described["status"],
        "aliases": described["aliases"],
        "run_id": mv.run_id,
        "model_uri": described["model_uri"],
        "dataset": dataset,
        "dataset_version": dataset_version,
        "dataset_versions": [v for v in params.get("dataset_versions", "").split(",") if v],
        "manifest": manifest,
        "manifest_error": manifest_error,
        "code_version": tags.get(Tags.CODE_VERSION),
        "feature_set": tags.get(Tags.FEATURE_SET),
        "feature_set_version": tags.get(Tags.FEATURE_SET_VERSION),
        "model_spec": tags.get(Tags.MODEL_SPEC),
        "seed": int(tags[Tags.SEED]) if tags.get(Tags.SEED) else None,
        "params": params,
        "metrics": {k: v for k, v in run.data.metrics.items() if not k.startswith("importance.")},
        "feature_importance": {
            k.removeprefix("importance."): v for k, v in run.data.metrics.items() if k.startswith("importance.")
        },
        "gates": described["gates"],
        "trigger": tags.get("flywheel.trigger"),
        "learning": learning,  # batch, or online: a snapshot of the online challenger, learnt since a drift
        "trigger_event_id": tags.get(Tags.TRIGGER_EVENT_ID),
        "correlation_id": tags.get(Tags.CORRELATION_ID),
        "causation_chain": [e for e in events if e],
        "history": [h for h in history if h.get("version") == version or h.get("previous") == version],
        # a rebuild: the version it retrained from its lineage
        **({"rebuild_of": version_tags["rebuild_of"]} if "rebuild_of" in version_tags else {}),
    }
