"""Feature definitions: one declarative feature set, computed the same way everywhere.

A feature set (``datasets/<name>/features.yaml``) names its entity key, timestamp
and, per feature, its inputs and a transform. Three callers use it: the feature
service online, training offline on a dataset version, and serving on a request.
``FeatureSet.compute`` is the only implementation of the transforms; the frame
form maps it over rows, so training and serving cannot disagree (no skew).

A feature set is immutable and its ``version`` is the hash of its canonical content:
editing ``features.yaml`` makes a new version, never a changed old one. A model is pinned
to the version it was trained with (``flywheel.common.featureversions``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from collections.abc import Callable, Iterable, Mapping
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, computed_field, model_validator

Transform = Literal["identity", "log1p", "sum", "ratio", "one_hot", "clip", "bucket"]


class FeatureDefinition(BaseModel):
    """One feature: its inputs and how they become a number.

    - ``identity``, ``log1p``: of the one input;
    - ``sum``: of all inputs;
    - ``ratio``: the first input over the sum of the others (0 when that is 0);
    - ``one_hot``: 1.0 when the input equals ``value``, else 0.0;
    - ``clip``: the input bounded to ``[min, max]``;
    - ``bucket``: the index of the first of ``edges`` the input is below (``len(edges)`` if none).
    """

    model_config = ConfigDict(frozen=True)

    name: str
    inputs: list[str] = Field(min_length=1)
    transform: Transform = "identity"
    value: Any = None
    min: float | None = None
    max: float | None = None
    edges: list[float] | None = None
    description: str = ""

    @model_validator(mode="before")
    @classmethod
    def _single_input(cls, data: Any) -> Any:
        if isinstance(data, dict) and "input" in data:
            data = {**data, "inputs": [data.pop("input")]}
        return data


VERSION_LENGTH = 16  # hex digits of the sha256, as for dataset versions


class FeatureSet(BaseModel):
    """An immutable set of features over one dataset's records, versioned by its content.

    A ``version`` in the input (older ``features.yaml`` files declared one) is ignored: the
    version is computed, so an edit can never keep the old version's name.
    """

    model_config = ConfigDict(frozen=True)

    feature_set: str
    dataset: str
    entity_key: str
    timestamp: str
    features: list[FeatureDefinition] = Field(min_length=1)

    @computed_field  # type: ignore[prop-decorator]
    @cached_property
    def version(self) -> str:
        """The content hash: the first hex digits of the sha256 of ``canonical()``.

        >>> a = FeatureSet(feature_set="f", dataset="d", entity_key="id", timestamp="ts",
        ...     features=[{"name": "x", "input": "x"}])
        >>> b = FeatureSet.model_validate({**a.definition(), "features": [{"name": "x", "inputs": ["x"],
        ...     "transform": "identity", "description": ""}]})
        >>> a.version == b.version  # the same content, however it is spelled
        True
        >>> c = FeatureSet(feature_set="f", dataset="d", entity_key="id", timestamp="ts",
        ...     features=[{"name": "x", "input": "x", "transform": "log1p"}])
        >>> a.version == c.version, len(a.version)
        (False, 16)
        """
        return hashlib.sha256(self.canonical().encode()).hexdigest()[:VERSION_LENGTH]

    def canonical(self) -> str:
        """The content as canonical JSON: sorted keys, no whitespace, defaults left out.

        Leaving defaults out keeps every existing version's hash when a new optional field
        (with its default) is added to the definitions.
        """
        content = self.model_dump(mode="json", exclude={"version"}, exclude_defaults=True)
        return json.dumps(content, sort_keys=True, separators=(",", ":"), allow_nan=False)

    def definition(self) -> dict[str, Any]:
        """The whole definition with its version: what is stored beside a model and in the archive."""
        return self.model_dump(mode="json")

    @cached_property
    def names(self) -> list[str]:
        """The features' names in the set's order (read on every request: computed once; callers must not change it)."""
        return [f.name for f in self.features]

    @cached_property
    def inputs(self) -> list[str]:
        """The raw columns the features read, sorted (computed once, as ``names``)."""
        return sorted({i for f in self.features for i in f.inputs})

    def compute(self, record: Mapping[str, Any]) -> dict[str, float]:
        """The feature vector of one record; a missing or null input gives NaN.

        >>> fs = FeatureSet(feature_set="f", dataset="d", entity_key="id", timestamp="ts",
        ...     features=[{"name": "income", "inputs": ["salary", "commission"], "transform": "sum"},
        ...               {"name": "is_a", "input": "grade", "transform": "one_hot", "value": "a"}])
        >>> fs.compute({"salary": 10.0, "commission": 2.5, "grade": "a"})
        {'income': 12.5, 'is_a': 1.0}
        >>> fs.compute({"salary": 10.0})["income"]
        nan
        """
        return dict(zip(self.names, self.vector(record), strict=True))

    def vector(self, record: Mapping[str, Any]) -> list[float]:
        """The feature values of one record in the set's order (as ``compute``): the hot path of serving."""
        return [feature(record) for feature in self.compiled]

    @cached_property
    def compiled(self) -> list[Callable[[Mapping[str, Any]], float]]:
        """Each feature as one function of a record, built once: ``vector``'s plan."""
        return [_compiled(f) for f in self.features]

    def matrix(self, records: Iterable[Mapping[str, Any]]) -> list[list[float]]:
        """Feature rows of many records, by the very same code as ``vector``."""
        return [self.vector(r) for r in records]

    def frame(self, data: Any) -> Any:
        """A pandas frame of features for a pandas frame of records (offline: training)."""
        import pandas as pd

        records = data.to_dict(orient="records")
        return pd.DataFrame(self.matrix(records), columns=self.names, index=data.index)


def _number(value: Any) -> float:
    """A feature input as a finite float; anything else (null, text, infinity, a 401-digit int) is NaN.

    >>> _number(10**401), _number(float("inf")), _number("7"), _number(True)
    (nan, nan, nan, 1.0)
    """
    if value is None or isinstance(value, bool | str):
        return math.nan if not isinstance(value, bool) else float(value)
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):  # pandas' NA; a list or dict; an int past the float range
        return math.nan
    return number if math.isfinite(number) else math.nan


def _total(xs: Iterable[float]) -> float:
    """The exact sum, or NaN where even finite values add up past the float range."""
    try:
        return math.fsum(xs)
    except OverflowError:
        return math.nan


def _log1p(f: FeatureDefinition, xs: list[Any]) -> float:
    x = _number(xs[0])
    return math.log1p(x) if x > -1 else math.nan


def _sum(f: FeatureDefinition, xs: list[Any]) -> float:
    return _total(_number(x) for x in xs)


def _ratio(f: FeatureDefinition, xs: list[Any]) -> float:
    numerator, denominator = _number(xs[0]), _total(_number(x) for x in xs[1:])
    if math.isnan(numerator) or math.isnan(denominator):
        return math.nan
    return _number(numerator / denominator) if denominator else 0.0  # a tiny denominator may overflow


def _missing(value: Any) -> bool:
    """None, a float NaN or pandas' NA: how a null looks online (JSON) and offline (a frame)."""
    return value is None or (isinstance(value, float) and math.isnan(value)) or type(value).__name__ == "NAType"


def _one_hot(f: FeatureDefinition, xs: list[Any]) -> float:
    if _missing(xs[0]):  # a null is unknown, not "another category": NaN, whichever caller
        return math.nan
    return 1.0 if xs[0] == f.value else 0.0


def _clip(f: FeatureDefinition, xs: list[Any]) -> float:
    x = _number(xs[0])
    if f.min is not None:
        x = max(x, f.min)
    if f.max is not None:
        x = min(x, f.max)
    return x


def _bucket(f: FeatureDefinition, xs: list[Any]) -> float:
    x = _number(xs[0])
    if math.isnan(x):
        return math.nan
    edges = f.edges or []
    return float(next((i for i, edge in enumerate(edges) if x < edge), len(edges)))


def _compiled(f: FeatureDefinition) -> Callable[[Mapping[str, Any]], float]:
    """``f`` as a function of a record; an identity, most features, reads its input without building a list.
    Partials of module functions, not closures: a feature set stays picklable."""
    if f.transform == "identity":
        return functools.partial(_identity_of, f.inputs[0])
    return functools.partial(_transformed, _TRANSFORMS[f.transform], f, tuple(f.inputs))


def _identity_of(column: str, record: Mapping[str, Any]) -> float:
    return _number(record.get(column))


def _transformed(
    transform: Callable[[FeatureDefinition, list[Any]], float],
    f: FeatureDefinition,
    inputs: tuple[str, ...],
    record: Mapping[str, Any],
) -> float:
    return transform(f, [record.get(i) for i in inputs])


# every transform but ``identity``, which ``_compiled`` reads straight from the record
_TRANSFORMS: dict[str, Callable[[FeatureDefinition, list[Any]], float]] = {
    "log1p": _log1p,
    "sum": _sum,
    "ratio": _ratio,
    "one_hot": _one_hot,
    "clip": _clip,
    "bucket": _bucket,
}


def load_feature_set(datasets_dir: Path, dataset: str) -> FeatureSet:
    """The feature set declared today in ``<datasets_dir>/<dataset>/features.yaml`` (its current version)."""
    path = Path(datasets_dir) / dataset / "features.yaml"
    if not path.exists():
        raise FileNotFoundError(f"no feature set for dataset {dataset!r} at {path}")
    return FeatureSet.model_validate(yaml.safe_load(path.read_text()))


def pinned(definition: Mapping[str, Any], version: str) -> FeatureSet:
    """A stored definition, checked to be the version it was stored as (else ``ValueError``).

    >>> fs = FeatureSet(feature_set="f", dataset="d", entity_key="id", timestamp="ts",
    ...     features=[{"name": "x", "input": "x"}])
    >>> pinned(fs.definition(), fs.version) == fs
    True
    >>> pinned(fs.definition(), "0123456789abcdef")
    Traceback (most recent call last):
    ...
    ValueError: feature set f: the stored definition hashes to ... not to version 0123456789abcdef
    """
    found = FeatureSet.model_validate(dict(definition))
    if found.version != version:
        raise ValueError(
            f"feature set {found.feature_set}: the stored definition hashes to {found.version}, "
            f"not to version {version}"
        )
    return found
