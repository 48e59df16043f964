"""The MLflow Model Registry as the registry service sees it: versions, aliases, tags, history.

Blocking MLflow calls; the service runs them in threads and serializes the writes.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mlflow
import mlflow.artifacts
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from flywheel.common.evaluation import score_model
from flywheel.common.featuresets import FeatureSet
from flywheel.common.featureversions import feature_set_of_run
from flywheel.common.safemodels import TRUSTED_MODULES, load_estimator
from flywheel.common.tracking import Tags, run_exists
from flywheel.registry.decisions import STATUS, may_serve
from flywheel.registry.scoring import Scorer
from flywheel.schemas import GateResult

ALIASES = ("champion", "challenger", "previous")
GATES = "flywheel.gates"
METRICS = "flywheel.metrics"
CHAIN = "flywheel.causation_chain"
CORRELATION = "flywheel.correlation_id"
HISTORY = "flywheel.history"
RECORDED_CHAMPION = "flywheel.champion"  # the champion the registry decided (an alias may be moved by hand)
GATE_SPEC = "flywheel.gate_spec"
GATE_FIGURES = "flywheel.gate_figures"
TAG_LIMIT = 5000  # MLflow's limit on a tag value


REFUSED = {"INVALID_PARAMETER_VALUE", "BAD_REQUEST", "RESOURCE_DOES_NOT_EXIST"}  # MLflow's "no such name"


class NotFound(LookupError):
    """No such model or version."""


def missing(exc: MlflowException) -> bool:
    return exc.error_code in {"RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"} or "not found" in str(exc).lower()


def now() -> str:
    return datetime.now(UTC).isoformat()


class ModelStore:
    """Reads and writes registered models; knows Flywheel's tag names."""

    def __init__(
        self,
        client: MlflowClient,
        legacy: Callable[[str], FeatureSet] | None = None,
        trusted: Iterable[str] = TRUSTED_MODULES,
    ) -> None:
        """``legacy(dataset)``: today's feature set, for a run logged before feature sets were pinned;
        ``trusted``: the modules a model's types may come from (``flywheel.common.safemodels``)."""
        self.client = client
        self.legacy = legacy
        self.trusted = list(trusted)
        self._champions: dict[tuple[str, str], Any] = {}
        self._scorers: dict[str, Scorer] = {}

    # -- reads -----------------------------------------------------------------------

    def aliases(self, name: str) -> dict[str, str]:
        try:
            model = self.client.get_registered_model(name)
        except MlflowException as exc:
            if missing(exc):
                return {}
            raise
        return {alias: str(version) for alias, version in (model.aliases or {}).items()}

    def version_for_run(self, name: str, run_id: str) -> str | None:
        found = self.client.search_model_versions(f"name='{name}' and run_id='{run_id}'")
        return str(found[0].version) if found else None

    def model_tags(self, name: str) -> dict[str, str]:
        try:
            return dict(self.client.get_registered_model(name).tags or {})
        except MlflowException as exc:
            if missing(exc):
                raise NotFound(f"no model {name!r} in the registry") from exc
            raise

    def version(self, name: str, version: str) -> Any:
        if not version.isdigit():
            raise NotFound(f"model {name!r} has no version {version!r} (versions are numbers)")
        try:
            return self.client.get_model_version(name, version)
        except MlflowException as exc:
            if missing(exc):
                self.model_tags(name)  # a missing model says so, not just a missing version
                raise NotFound(f"model {name!r} has no version {version!r}") from exc
            raise

    def describe_version(self, mv: Any, aliases: dict[str, str]) -> dict[str, Any]:
        tags = dict(mv.tags or {})
        return {
            "name": mv.name,
            "version": str(mv.version),
            "run_id": mv.run_id,
            "model_uri": f"models:/{mv.name}/{mv.version}",
            "source": mv.source,
            "status": tags.get(STATUS, "unknown"),
            "may_serve": may_serve(tags.get(STATUS, "unknown")),
            "aliases": sorted(a for a, v in aliases.items() if v == str(mv.version)),
            "metrics": json.loads(tags.get(METRICS, "{}")),
            "gates": json.loads(tags.get(GATES, "[]")),
            "gate_spec": json.loads(tags.get(GATE_SPEC, "null")),
            "gate_figures": json.loads(tags.get(GATE_FIGURES, "{}")),
            "created_at": datetime.fromtimestamp(mv.creation_timestamp / 1000, UTC).isoformat(),
            "tags": {k: v for k, v in tags.items() if k not in {METRICS, GATES, GATE_SPEC, GATE_FIGURES}},
        }

    def describe(self, name: str) -> dict[str, Any]:
        tags = self.model_tags(name)
        aliases = self.aliases(name)
        versions = self.client.search_model_versions(f"name='{name}'", max_results=1000)
        described = sorted(
            (self.describe_version(mv, aliases) for mv in versions), key=lambda v: int(v["version"]), reverse=True
        )
        return {
            "name": name,
            "aliases": aliases,
            "champion": aliases.get("champion"),
            "challenger": aliases.get("challenger"),
            "previous": aliases.get("previous"),
            "versions": described,
            "history": json.loads(tags.get(HISTORY, "[]")),
        }

    def champions(self) -> list[tuple[str, dict[str, str], dict[str, str]]]:
        """Every model's name, aliases and tags, in one call."""
        found = self.client.search_registered_models(max_results=1000)
        return [(m.name, {a: str(v) for a, v in (m.aliases or {}).items()}, dict(m.tags or {})) for m in found]

    def status(self, name: str, version: str) -> str | None:
        """A version's ``flywheel.status`` (``unknown`` when it has none); None when there is no such version."""
        try:
            return (self.version(name, version).tags or {}).get(STATUS, "unknown")
        except NotFound:
            return None

    def record_champion(self, name: str, version: str) -> None:
        self.client.set_registered_model_tag(name, RECORDED_CHAMPION, version)

    def names(self) -> list[str]:
        return sorted(m.name for m in self.client.search_registered_models(max_results=1000))

    def run(self, run_id: str) -> Any:
        return self.client.get_run(run_id)

    def run_exists(self, run_id: str) -> bool:
        return run_exists(self.client, run_id)

    # -- the champion on the candidate's data ------------------------------------------

    def eval_split(self, run_id: str, artifact: str, label: str) -> tuple[pd.DataFrame, pd.Series]:
        with tempfile.TemporaryDirectory() as tmp:
            path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact, dst_path=tmp)
            frame = pd.read_parquet(Path(path))
        if label not in frame.columns:
            raise ValueError(f"eval split of run {run_id} has no label column {label!r}")
        return frame.drop(columns=[label]), frame[label]

    def score_version(self, name: str, version: str, features: pd.DataFrame, labels: pd.Series) -> dict[str, float]:
        """Metrics of a registered version on someone else's evaluation data."""
        key = (name, version)
        if key not in self._champions:
            self._champions = {key: load_estimator(f"models:/{name}/{version}", self.trusted)}  # keep one
        model = self._champions[key]
        wanted = list(getattr(model, "feature_names_in_", features.columns))
        absent = sorted(set(wanted) - set(features.columns))
        if absent:
            raise ValueError(f"the evaluation data lacks the champion's features {absent}")
        return score_model(model, features[wanted], labels)

    # -- the held-out slices a run logged, scored by any model ------------------------------

    def slice(self, run_id: str, artifact: str) -> pd.DataFrame:
        """A run's evaluation slice: raw labelled records (``Lineage.eval_slices``)."""
        with tempfile.TemporaryDirectory() as tmp:
            path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact, dst_path=tmp)
            return pd.read_parquet(Path(path))

    def scorer(self, model_uri: str, run_id: str) -> Scorer:
        """A model and the feature set pinned to its run (the last two are kept: the champion's for the next)."""
        if model_uri in self._scorers:
            self._scorers[model_uri] = self._scorers.pop(model_uri)  # the most recently used last
        else:
            run = self.client.get_run(run_id)
            dataset = run.data.tags.get(Tags.DATASET, "")

            def legacy() -> FeatureSet:
                if self.legacy is None:
                    raise ValueError(f"run {run_id} has no pinned feature set and no datasets directory is set")
                return self.legacy(dataset)

            features = feature_set_of_run(self.client, run, legacy)
            scorer = Scorer(load_estimator(model_uri, self.trusted), features)
            self._scorers = {**dict(list(self._scorers.items())[-1:]), model_uri: scorer}  # keep two
        return self._scorers[model_uri]

    # -- writes (serialized by the caller) ------------------------------------------------

    def ensure_model(self, name: str) -> None:
        try:
            self.client.get_registered_model(name)
        except MlflowException as exc:
            if not missing(exc):
                raise
            try:
                self.client.create_registered_model(name, description="Registered by flywheel-registry.")
            except MlflowException as again:
                if "ALREADY_EXISTS" not in (again.error_code or ""):
                    raise

    def register(self, name: str, model_uri: str, run_id: str, tags: dict[str, str]) -> str:
        self.ensure_model(name)
        # MLflow 3 logs models as LoggedModels (models:/m-<id>); the version must name that id.
        model_id = model_uri.removeprefix("models:/") if model_uri.startswith("models:/m-") else None
        mv = self.client.create_model_version(name=name, source=model_uri, run_id=run_id, tags=tags, model_id=model_id)
        return str(mv.version)

    def set_tags(self, name: str, version: str, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_model_version_tag(name, version, key, value)

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self.client.set_registered_model_alias(name, alias, version)

    def delete_alias(self, name: str, alias: str) -> None:
        try:
            self.client.delete_registered_model_alias(name, alias)
        except MlflowException as exc:
            if not missing(exc):
                raise

    def record(self, name: str, entry: dict[str, Any], keep: int) -> None:
        """Append a champion move to the model's history tag (newest last, bounded)."""
        history = json.loads(self.model_tags(name).get(HISTORY, "[]"))
        history = [*history, entry][-keep:]
        while len(json.dumps(history)) > TAG_LIMIT and len(history) > 1:
            history = history[1:]
        self.client.set_registered_model_tag(name, HISTORY, json.dumps(history))


def gates_tag(gates: list[GateResult]) -> str:
    text = json.dumps([g.model_dump() for g in gates])
    return text if len(text) <= TAG_LIMIT else json.dumps([{"gate": g.gate, "passed": g.passed} for g in gates])


def figures_tag(figures: dict[str, Any]) -> str:
    """The gates' figures as a tag value (rounded; only the slices' sizes if even that is too long)."""
    rounded = json.loads(json.dumps(figures), parse_float=lambda v: round(float(v), 6))
    text = json.dumps(rounded, allow_nan=True)
    return text if len(text) <= TAG_LIMIT else json.dumps({k: {"rows": v.get("rows")} for k, v in figures.items()})
