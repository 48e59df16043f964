"""What a registered version's run recorded, read back from MLflow for a rebuild and its comparison.

The I/O edge of ``flywheel.training.rebuild``: the pinned request is built from the run's
lineage, its recorded training data (``flywheel.common.trainingdata``) and its spec; the
comparison reads both runs' metrics and both models' files.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient

from flywheel.common.modelspec import load_model_spec
from flywheel.common.tracking import Tags
from flywheel.common.trainingdata import training_data_of_run
from flywheel.schemas import Lineage, Rebuild
from flywheel.training.rebuild import ENVIRONMENT, Built, RebuildRefused, file_digest, pin

SPEC_ARTIFACT = "model_spec.json"
MODEL_URI_TAG = "flywheel.model_uri"


def artifact_json(client: MlflowClient, run_id: str, path: str) -> Any | None:
    """A run's JSON artifact, or None when the run has none at that path."""
    listed = {a.path for a in client.list_artifacts(run_id, str(Path(path).parent) if "/" in path else None)}
    if path not in listed:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        return json.loads(Path(client.download_artifacts(run_id, path, tmp)).read_text())


def read_pin(client: MlflowClient, name: str, version: str, datasets_dir: Path, force: bool) -> Rebuild:
    """The rebuild request's pinned inputs for ``name`` version ``version``; raises ``RebuildRefused``
    when its run did not record what a rebuild needs (MLflow's own errors, e.g. no such version, pass)."""
    mv = client.get_model_version(name, version)
    run = client.get_run(mv.run_id)
    recorded = artifact_json(client, mv.run_id, "lineage.json")
    if recorded is None:
        raise RebuildRefused(f"{name} v{version}'s run {mv.run_id} has no lineage.json to rebuild from")
    # the tag, not the artifact: the run's code version as everyone reads it (and as an operator corrected it)
    lineage = Lineage.model_validate(recorded)
    lineage = lineage.model_copy(update={"code_version": run.data.tags.get(Tags.CODE_VERSION, lineage.code_version)})
    spec = artifact_json(client, mv.run_id, SPEC_ARTIFACT)
    if spec is None:  # a run logged before its spec was: today's spec file with the run's params
        spec = load_model_spec(datasets_dir, lineage.dataset, lineage.model_spec).with_overrides(lineage.params)
        spec = spec.model_copy(update={"seed": lineage.seed}).model_dump(mode="json")
    data = training_data_of_run(client, run)
    if data is not None and data.label_batches is not None:
        batches = list(data.label_batches)
    else:  # older runs: the param, unless it was cut to fit
        listed = run.data.params.get("label_batches", "none")
        if len(listed) >= 6000:
            raise RebuildRefused(f"{name} v{version}'s run recorded its label batches only in part")
        batches = [b for b in listed.split(",") if b and listed != "none"]
    model_uri = run.data.tags.get(MODEL_URI_TAG) or mv.source
    return pin(version, mv.run_id, model_uri, lineage, spec, batches, force)


def built(client: MlflowClient, run_id: str, model_uri: str, code_version: str, fingerprint: str | None) -> Built:
    """One side of a rebuild's comparison: the run's top-level metrics and its model's files."""
    metrics = {k: v for k, v in client.get_run(run_id).data.metrics.items() if "." not in k}
    files: dict[str, str] = {}
    environment: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tmp))
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            name, body = path.relative_to(root).as_posix(), path.read_bytes()
            files[name] = file_digest(name, body)
            if name in ENVIRONMENT:
                environment[name] = body.decode(errors="replace")
    return Built(metrics, files, code_version, fingerprint, environment)
