"""Feature definitions: one declarative feature set, computed the same way everywhere.

A feature set (``datasets/<name>/features.yaml``) names its entity key, timestamp
and, per feature, its inputs and a transform. Three callers use it: the feature
service online, training offline on a dataset version, and serving on a request.
``FeatureSet.compute`` is the only implementation of the transforms; the frame
form maps it over rows, so training and serving cannot disagree (no skew).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, model_validator

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


class FeatureSet(BaseModel):
    """A versioned set of features over one dataset's records."""

    feature_set: str
    version: str
    dataset: str
    entity_key: str
    timestamp: str
    features: list[FeatureDefinition] = Field(min_length=1)

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def inputs(self) -> list[str]:
        return sorted({i for f in self.features for i in f.inputs})

    def compute(self, record: Mapping[str, Any]) -> dict[str, float]:
        """The feature vector of one record; a missing or null input gives NaN.

        >>> fs = FeatureSet(feature_set="f", version="1", dataset="d", entity_key="id", timestamp="ts",
        ...     features=[{"name": "income", "inputs": ["salary", "commission"], "transform": "sum"},
        ...               {"name": "is_a", "input": "grade", "transform": "one_hot", "value": "a"}])
        >>> fs.compute({"salary": 10.0, "commission": 2.5, "grade": "a"})
        {'income': 12.5, 'is_a': 1.0}
        >>> fs.compute({"salary": 10.0})["income"]
        nan
        """
        return {f.name: _TRANSFORMS[f.transform](f, [record.get(i) for i in f.inputs]) for f in self.features}

    def vector(self, record: Mapping[str, Any]) -> list[float]:
        """The feature values of one record in the set's order: the hot path of serving."""
        return [_TRANSFORMS[f.transform](f, [record.get(i) for i in f.inputs]) for f in self.features]

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


def _identity(f: FeatureDefinition, xs: list[Any]) -> float:
    return _number(xs[0])


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


_TRANSFORMS: dict[str, Callable[[FeatureDefinition, list[Any]], float]] = {
    "identity": _identity,
    "log1p": _log1p,
    "sum": _sum,
    "ratio": _ratio,
    "one_hot": _one_hot,
    "clip": _clip,
    "bucket": _bucket,
}


def load_feature_set(datasets_dir: Path, dataset: str) -> FeatureSet:
    """The feature set declared in ``<datasets_dir>/<dataset>/features.yaml``."""
    path = Path(datasets_dir) / dataset / "features.yaml"
    if not path.exists():
        raise FileNotFoundError(f"no feature set for dataset {dataset!r} at {path}")
    return FeatureSet.model_validate(yaml.safe_load(path.read_text()))
