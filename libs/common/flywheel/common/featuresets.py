"""Feature definitions: one declarative feature set, computed the same way everywhere.

A feature set (``datasets/<name>/features.yaml``) names its entity key, timestamp
and, per feature, its inputs and a transform. Three callers use it: the feature
service online, training offline on a dataset version, and serving on a request.
``FeatureSet.array`` is the only implementation of the transforms, over a batch's
columns at once; one record is a batch of one and a frame a batch of its rows, so
training and serving cannot disagree (no skew).

A feature set is immutable and its ``version`` is the hash of its canonical content:
editing ``features.yaml`` makes a new version, never a changed old one. A model is pinned
to the version it was trained with (``flywheel.common.featureversions``).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterable, Mapping
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np
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
            data = {**{k: v for k, v in data.items() if k != "input"}, "inputs": [data["input"]]}  # the caller's stays
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
        """The feature values of one record in the set's order (as ``compute``)."""
        return self.matrix([record])[0]

    def matrix(self, records: Iterable[Mapping[str, Any]]) -> list[list[float]]:
        """Feature rows of many records (``array`` as plain floats)."""
        return self.array(records).tolist()

    def array(self, records: Iterable[Mapping[str, Any]]) -> np.ndarray:
        """The features of many records as one float array, a row per record: each feature is computed over
        the batch's column of its inputs at once (the only implementation of the transforms, every caller's)."""
        records = records if isinstance(records, list | tuple) else list(records)
        columns: dict[str, np.ndarray] = {}  # an input read by several features is converted once
        out = np.empty((len(records), len(self.features)), dtype=float)
        with np.errstate(all="ignore"):  # an overflow or a 0/0 is NaN by the transforms' own rules
            for j, feature in enumerate(self.features):
                out[:, j] = _TRANSFORMS[feature.transform](feature, records, columns)
        return out

    def frame(self, data: Any) -> Any:
        """A pandas frame of features for a pandas frame of records (offline: training)."""
        import pandas as pd

        records = data.to_dict(orient="records")
        return pd.DataFrame(self.array(records), columns=self.names, index=data.index)


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


# a column shorter than this converts value by value: numpy's conversion costs more than it saves on a few
_AT_ONCE = 8
# what converts to a float array as ``_number`` converts each (a frame's values are numpy's)
_PLAIN_NUMBERS = {float, int, np.float64, np.float32, np.int64, np.int32}


def _raw(records: list[Mapping[str, Any]], column: str) -> list[Any]:
    return [record.get(column) for record in records]


def _numbers(records: list[Mapping[str, Any]], columns: dict[str, np.ndarray], column: str) -> np.ndarray:
    """A column of inputs as ``_number``s (read-only: shared by the features that read it). Plain ints and floats,
    the usual batch, convert at once; any other value is converted on its own."""
    if column not in columns:
        values = _raw(records, column)
        try:
            if len(values) < _AT_ONCE or not set(map(type, values)) <= _PLAIN_NUMBERS:
                raise TypeError
            numbers = np.array(values, dtype=float)
            numbers[~np.isfinite(numbers)] = np.nan
        except (TypeError, OverflowError):  # text, nulls, booleans, an int past the float range
            numbers = np.fromiter(map(_number, values), dtype=float, count=len(values))
        numbers.flags.writeable = False
        columns[column] = numbers
    return columns[column]


def _total(parts: list[np.ndarray], rows: int) -> np.ndarray:
    """The exact sum of each row's parts (``math.fsum``; 0 for none), NaN where even finite values add up past the
    float range. Up to two parts add exactly in floating point (a single rounding); more are summed row by row."""
    if len(parts) <= 2:
        summed = sum(parts, start=np.zeros(rows))  # from +0.0, as fsum: -0.0 + -0.0 is 0.0 then
    else:
        summed = np.fromiter(map(_fsum, zip(*parts, strict=True)), dtype=float, count=rows)
    summed[np.isinf(summed)] = np.nan
    return summed


def _fsum(xs: Iterable[float]) -> float:
    try:
        return math.fsum(xs)
    except OverflowError:
        return math.nan


Columns = dict[str, np.ndarray]
ColumnTransform = Callable[[FeatureDefinition, list[Mapping[str, Any]], Columns], np.ndarray]


def _identity(f: FeatureDefinition, records: list[Mapping[str, Any]], columns: Columns) -> np.ndarray:
    return _numbers(records, columns, f.inputs[0])


def _log1p(f: FeatureDefinition, records: list[Mapping[str, Any]], columns: Columns) -> np.ndarray:
    """libm's log1p, as ``math.log1p`` (numpy's own differs in the last digit: a model's features must not)."""
    x = _numbers(records, columns, f.inputs[0])
    found = np.full(len(x), np.nan)
    defined = x > -1
    found[defined] = np.fromiter(map(math.log1p, x[defined].tolist()), dtype=float, count=int(defined.sum()))
    return found


def _sum(f: FeatureDefinition, records: list[Mapping[str, Any]], columns: Columns) -> np.ndarray:
    return _total([_numbers(records, columns, i) for i in f.inputs], len(records))


def _ratio(f: FeatureDefinition, records: list[Mapping[str, Any]], columns: Columns) -> np.ndarray:
    """The first input over the sum of the others; 0 where that sum is 0; NaN where either is, or it overflows."""
    numerator = _numbers(records, columns, f.inputs[0])
    denominator = _total([_numbers(records, columns, i) for i in f.inputs[1:]], len(records))
    ratio = np.where(denominator == 0, 0.0, numerator / np.where(denominator == 0, 1.0, denominator))
    ratio[~np.isfinite(ratio) | np.isnan(numerator)] = np.nan
    return ratio


def _missing(value: Any) -> bool:
    """None, a float NaN or pandas' NA: how a null looks online (JSON) and offline (a frame)."""
    return value is None or (isinstance(value, float) and math.isnan(value)) or type(value).__name__ == "NAType"


def _one_hot(f: FeatureDefinition, records: list[Mapping[str, Any]], columns: Columns) -> np.ndarray:
    """1.0 where the input equals the value, else 0.0; a null is unknown, not "another category": NaN."""
    values = _raw(records, f.inputs[0])
    return np.fromiter(
        (math.nan if _missing(v) else (1.0 if v == f.value else 0.0) for v in values), dtype=float, count=len(values)
    )


def _clip(f: FeatureDefinition, records: list[Mapping[str, Any]], columns: Columns) -> np.ndarray:
    """The input bounded to ``[min, max]`` as Python's ``max`` then ``min`` bound it: the input stays unless a bound
    is beyond it (so -0.0 stays -0.0 at a bound of 0.0, and NaN stays NaN)."""
    x = _numbers(records, columns, f.inputs[0])
    if f.min is not None:
        x = np.where(f.min > x, f.min, x)
    if f.max is not None:
        x = np.where(f.max < x, f.max, x)
    return x


def _bucket(f: FeatureDefinition, records: list[Mapping[str, Any]], columns: Columns) -> np.ndarray:
    """The index of the first edge the input is below (``len(edges)`` if none); NaN for NaN."""
    x = _numbers(records, columns, f.inputs[0])
    edges = f.edges or []
    if edges == sorted(edges):  # then the first edge above x is the count of edges at or below it
        found = np.searchsorted(np.asarray(edges, dtype=float), x, side="right").astype(float)
    else:
        found = np.fromiter(
            (next((i for i, edge in enumerate(edges) if v < edge), len(edges)) for v in x.tolist()),
            dtype=float,
            count=len(x),
        )
    found[np.isnan(x)] = np.nan
    return found


_TRANSFORMS: dict[str, ColumnTransform] = {
    "identity": _identity,
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
