"""Rebuilding a registered version from its lineage: the pinned request, the refusal, the comparison.

Pure: recorded facts in, decisions out; reading MLflow is ``flywheel.training.recorded``'s.
A rebuild trains on exactly what the version recorded (dataset versions, label batches, the
drift's cut, spec with params and seed, feature-set version), never on a re-resolved window,
and only with the code version it recorded unless forced. Its result is then held against
the original: metrics equal, model payload equal, and where not, why.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from flywheel.schemas import DatasetManifest, Lineage, Rebuild

METRIC_TOLERANCE = 1e-12
MLMODEL = "MLmodel"
# MLmodel fields that name the run and the moment, not the model: two identical fits differ in them
MLMODEL_VOLATILE = frozenset({"artifact_path", "model_uuid", "model_id", "run_id", "utc_time_created"})
ENVIRONMENT = ("requirements.txt", "python_env.yaml", "conda.yaml")


class RebuildRefused(ValueError):
    """The version cannot be rebuilt as recorded (a 409, or the rebuild run's failure reason)."""


def code_refusal(recorded: str, running: str, force: bool) -> str | None:
    """Why a rebuild may not run on this code, or None when it may.

    >>> code_refusal("abc", "abc", force=False) is None, code_refusal("abc", "def", force=True) is None
    (True, True)
    >>> code_refusal("abc", "def", force=False)
    "the version was trained with code version 'abc' but training runs 'def': ...
    """
    if recorded == running or force:
        return None
    return (
        f"the version was trained with code version {recorded!r} but training runs {running!r}: "
        "deploy that code to rebuild it, or force the rebuild to see what the new code makes of the same inputs"
    )


def pin(
    version: str,
    run_id: str,
    model_uri: str,
    lineage: Lineage,
    spec: Mapping[str, Any],
    label_batches: list[str],
    force: bool = False,
) -> Rebuild:
    """The rebuild's pinned inputs, from what the version's run recorded.

    A drift retrain recorded before its cut was (``lineage.drift_cut`` None, a drift window) cannot
    be split as it was: refused, rather than rebuilt on a guess.
    """
    drift_mode = str(lineage.window.get("drift", "none"))
    if lineage.drift_cut is None and drift_mode != "none":
        raise RebuildRefused(
            f"the run split its window on a drift ({drift_mode}) but recorded no drift cut (it predates rebuilds)"
        )
    return Rebuild(
        model_version=version,
        run_id=run_id,
        model_uri=model_uri,
        dataset_versions=list(lineage.dataset_versions or [lineage.dataset_version]),
        label_batches=list(label_batches),
        drift_cut=lineage.drift_cut,
        spec=dict(spec),
        feature_set_version=lineage.feature_set_version,
        code_version=lineage.code_version,
        fingerprint=lineage.fingerprint,
        force=force,
    )


def pinned_versions(manifests: list[DatasetManifest], wanted: list[str]) -> list[DatasetManifest]:
    """The manifests of exactly the pinned versions, in the pinned order; refused when one is gone.

    >>> def m(v): return DatasetManifest(dataset="d", version=v, content_hash=v, row_count=1, columns={}, uri="")
    >>> [x.version for x in pinned_versions([m("a"), m("b"), m("c")], ["c", "a"])]
    ['c', 'a']
    >>> pinned_versions([m("a")], ["a", "z"])
    Traceback (most recent call last):
    ...
    flywheel.training.rebuild.RebuildRefused: the recorded dataset versions ['z'] are no longer in the store
    """
    by_version = {m.version: m for m in manifests}
    gone = [v for v in wanted if v not in by_version]
    if gone:
        raise RebuildRefused(f"the recorded dataset versions {gone} are no longer in the store")
    return [by_version[v] for v in wanted]


def file_digest(name: str, body: bytes) -> str:
    """The sha256 of a model file's payload: a zip's members (not their timestamps; a skops archive's with
    its object ids renumbered), MLmodel less its volatile fields, any other file as it is.

    >>> a, b = io.BytesIO(), io.BytesIO()
    >>> for buffer, when in ((a, (2020, 1, 1, 0, 0, 0)), (b, (2021, 1, 1, 0, 0, 0))):
    ...     with zipfile.ZipFile(buffer, "w") as z:
    ...         z.writestr(zipfile.ZipInfo("schema.json", when), "{}")
    >>> a.getvalue() != b.getvalue(), file_digest("model.skops", a.getvalue()) == file_digest("m", b.getvalue())
    (True, True)
    >>> file_digest(MLMODEL, b"run_id: x\\nflavors: {}\\n") == file_digest(MLMODEL, b"run_id: y\\nflavors: {}\\n")
    True
    """
    digest = hashlib.sha256()
    if zipfile.is_zipfile(io.BytesIO(body)):
        with zipfile.ZipFile(io.BytesIO(body)) as archive:
            members = {member: archive.read(member) for member in archive.namelist()}
        for member, content in sorted(skops_canonical(members).items()):
            digest.update(member.encode() + b"\0" + hashlib.sha256(content).digest())
        return digest.hexdigest()
    if name.rsplit("/", 1)[-1] == MLMODEL:
        fields = {k: v for k, v in (yaml.safe_load(body) or {}).items() if k not in MLMODEL_VOLATILE}
        body = json.dumps(fields, sort_keys=True, default=str).encode()
    digest.update(body)
    return digest.hexdigest()


def skops_canonical(members: dict[str, bytes]) -> dict[str, bytes]:
    """A skops archive's members with its object ids renumbered in schema order.

    skops names each object (and its ``<id>.npy`` file) by the Python ``id()`` it had when saved, a
    memory address: two saves of one model differ in them and in nothing else.

    >>> def saved(first, second):
    ...     schema = {"a": {"__id__": first, "file": f"{first}.npy"}, "b": {"__id__": second}}
    ...     return {"schema.json": json.dumps(schema).encode(), f"{first}.npy": b"array"}
    >>> skops_canonical(saved(140001, 140002)) == skops_canonical(saved(93, 17))
    True
    >>> skops_canonical({"data.bin": b"x"})
    {'data.bin': b'x'}
    """
    if "schema.json" not in members:
        return members
    ids: dict[str, str] = {}

    def renumber(node: Any) -> Any:
        if isinstance(node, list):
            return [renumber(item) for item in node]
        if not isinstance(node, dict):
            return node
        found = {k: renumber(v) for k, v in node.items()}
        if "__id__" in found:
            found["__id__"] = ids.setdefault(str(found["__id__"]), str(len(ids)))
        if isinstance(found.get("file"), str) and found["file"].endswith(".npy"):
            stem = found["file"].removesuffix(".npy")
            found["file"] = f"{ids.setdefault(stem, str(len(ids)))}.npy"
        return found

    schema = renumber(json.loads(members["schema.json"]))
    canonical = {"schema.json": json.dumps(schema, sort_keys=True).encode()}
    for member, content in members.items():
        stem = member.removesuffix(".npy")
        if member != "schema.json":
            canonical[f"{ids[stem]}.npy" if member.endswith(".npy") and stem in ids else member] = content
    return canonical


@dataclass(frozen=True)
class Built:
    """One side of the comparison: what a run recorded and made."""

    metrics: dict[str, float]
    files: dict[str, str]  # model file -> payload digest
    code_version: str
    fingerprint: str | None = None
    environment: dict[str, str] = field(default_factory=dict)  # requirements.txt etc. -> text


@dataclass(frozen=True)
class Comparison:
    """Whether a rebuild made the same model as the original, and why not where that is knowable."""

    metrics_equal: bool
    model_equal: bool
    inputs_equal: bool
    metric_differences: dict[str, list[float | None]]
    differing_files: list[str]
    reasons: list[str]

    @property
    def equal(self) -> bool:
        return self.metrics_equal and self.model_equal

    def as_tag(self, limit: int = 5000) -> str:
        """As JSON that fits an MLflow tag: the verdicts always, the details when there is room."""
        full = json.dumps(self.as_dict())
        if len(full) <= limit:
            return full
        verdicts = {k: v for k, v in self.as_dict().items() if k not in ("metric_differences", "differing_files")}
        verdicts["reasons"] = [r[:300] for r in self.reasons[:5]]
        return json.dumps(verdicts)[:limit]

    def as_dict(self) -> dict[str, Any]:
        return {
            "equal": self.equal,
            "metrics_equal": self.metrics_equal,
            "model_equal": self.model_equal,
            "inputs_equal": self.inputs_equal,
            "metric_differences": self.metric_differences,
            "differing_files": self.differing_files,
            "reasons": self.reasons,
        }


def metric_differences(
    original: Mapping[str, float], rebuilt: Mapping[str, float], tolerance: float = METRIC_TOLERANCE
) -> dict[str, list[float | None]]:
    """Each metric whose values differ by more than ``tolerance`` (or that one side lacks): [original, rebuilt].

    >>> metric_differences({"mae": 1.0, "n": 3.0}, {"mae": 1.0 + 1e-15, "rmse": 2.0})
    {'n': [3.0, None], 'rmse': [None, 2.0]}
    """
    found: dict[str, list[float | None]] = {}
    for name in sorted({*original, *rebuilt}):
        a, b = original.get(name), rebuilt.get(name)
        if a is None or b is None or abs(a - b) > tolerance:
            found[name] = [a, b]
    return found


def compare(original: Built, rebuilt: Built) -> Comparison:
    """Hold a rebuild against the original: each metric, each model file's payload, and why they differ.

    >>> same = Built({"mae": 1.0}, {"model.skops": "a", "MLmodel": "m"}, "c1", "f")
    >>> compare(same, same).equal, compare(same, same).reasons
    (True, [])
    >>> other = Built({"mae": 1.5}, {"model.skops": "b", "MLmodel": "m"}, "c1", "f")
    >>> compare(same, other).reasons[-1]
    'the fitted model differs on identical inputs, code and libraries: the estimator is not deterministic ...'
    """
    metrics = metric_differences(original.metrics, rebuilt.metrics)
    files = sorted(n for n in {*original.files, *rebuilt.files} if original.files.get(n) != rebuilt.files.get(n))
    inputs_equal = original.fingerprint is not None and original.fingerprint == rebuilt.fingerprint
    return Comparison(
        metrics_equal=not metrics,
        model_equal=not files,
        inputs_equal=inputs_equal,
        metric_differences=metrics,
        differing_files=files,
        reasons=reasons(original, rebuilt, metrics, files, inputs_equal),
    )


def reasons(
    original: Built, rebuilt: Built, metrics: dict[str, Any], files: list[str], inputs_equal: bool
) -> list[str]:
    """Why a rebuild differs, most telling first; empty when it does not."""
    if not metrics and not files:
        return []
    found = []
    if original.code_version != rebuilt.code_version:
        found.append(f"the code differs: {original.code_version!r} then, {rebuilt.code_version!r} now")
    if not inputs_equal:
        found.append(
            f"the inputs differ (fingerprint {original.fingerprint} then, {rebuilt.fingerprint} now): "
            "data, labels, spec or feature set are not what the version recorded"
        )
    for name in (n for n in ENVIRONMENT if original.environment.get(n) != rebuilt.environment.get(n)):
        then = set((original.environment.get(name) or "").splitlines())
        now = set((rebuilt.environment.get(name) or "").splitlines())
        found.append(f"library versions differ ({name}): then {sorted(then - now)}, now {sorted(now - then)}")
    if MLMODEL in files:
        found.append("the MLmodel description differs beyond its run ids and timestamps (flavors, signature)")
    if not found:
        found.append(
            "the fitted model differs on identical inputs, code and libraries: the estimator is not deterministic "
            "(unseeded randomness, thread scheduling or floating-point summation order)"
        )
    return found
