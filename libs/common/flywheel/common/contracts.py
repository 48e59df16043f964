"""Data contracts: what a dataset's records must look like, declared in a YAML file.

A contract names the dataset, its entity key, its timestamp and label columns,
and per column a type, whether nulls are allowed, a range and allowed
categories. ``DataContract.check`` returns the cleaned record or every violation.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, JsonValue, model_validator

from flywheel.schemas import LabelObserved, PredictionLabelled, Violation

ColumnType = Literal["int", "float", "str", "bool", "datetime"]

# Past these a value cannot be stored (Parquet int64, pandas' nanosecond timestamps) or computed
# with (floats), whatever the contract's own range: reject the record rather than fail downstream.
INT64 = 2**63 - 1
TIME_MIN = datetime(1678, 1, 1, tzinfo=UTC)
TIME_MAX = datetime(2261, 12, 31, tzinfo=UTC)


class ColumnRule(BaseModel):
    """The rules of one column."""

    type: ColumnType
    nullable: bool = False
    min: float | None = None
    max: float | None = None
    categories: list[JsonValue] | None = None
    description: str = ""


class DataContract(BaseModel):
    """A dataset's data contract, loaded from ``datasets/<name>/contract.yaml``."""

    dataset: str
    version: str
    entity_key: str
    timestamp: str
    label: str | None = None
    allow_unknown_columns: bool = False
    columns: dict[str, ColumnRule] = Field(min_length=1)

    @model_validator(mode="after")
    def _key_columns_declared(self) -> DataContract:
        for role in ("entity_key", "timestamp", "label"):
            column = getattr(self, role)
            if column is not None and column not in self.columns:
                raise ValueError(f"{role} column {column!r} is not declared in columns")
        return self

    @property
    def feature_columns(self) -> list[str]:
        roles = {self.entity_key, self.timestamp, self.label}
        return [c for c in self.columns if c not in roles]

    def check(self, data: dict[str, Any]) -> tuple[dict[str, Any], list[Violation]]:
        """Coerce a record to the contract's types; list every rule it breaks.

        >>> contract = DataContract(dataset="d", version="1", entity_key="id", timestamp="ts",
        ...     columns={"id": {"type": "str"}, "ts": {"type": "datetime"},
        ...              "age": {"type": "int", "min": 18, "max": 99}})
        >>> clean, problems = contract.check({"id": "a", "ts": "2026-01-01T00:00:00Z", "age": 7})
        >>> [(p.column, p.rule) for p in problems]
        [('age', 'range')]
        """
        return self.check_many([data])[0]

    def check_many(self, records: Sequence[dict[str, Any]]) -> list[tuple[dict[str, Any], list[Violation]]]:
        """``check`` of each record, a column at a time: a column whose values all plainly hold (the batch's usual
        case) is passed in one go; any other is checked value by value, so the outcomes are ``check``'s exactly.

        >>> contract = DataContract(dataset="d", version="1", entity_key="id", timestamp="ts",
        ...     columns={"id": {"type": "str"}, "ts": {"type": "datetime"}, "x": {"type": "float", "max": 10}})
        >>> [(clean.get("x"), [p.rule for p in problems]) for clean, problems in contract.check_many(
        ...     [{"id": "a", "ts": "2026-01-01", "x": 1}, {"id": "b", "ts": "2026-01-01", "x": 11.0, "y": 0}])]
        [(1.0, []), (11.0, ['unknown', 'range'])]
        """
        cleans: list[dict[str, Any]] = [{} for _ in records]
        problems = [[] if self.allow_unknown_columns else self._unknown_in(data) for data in records]
        for column, rule in self.columns.items():
            coerced, broken = _check_column(column, rule, [data.get(column) for data in records])
            for clean, value in zip(cleans, coerced, strict=True):
                clean[column] = value
            for index, found in broken.items():
                problems[index] += found
                if found[0].rule != "nullable" and coerced[index] is None:
                    del cleans[index][column]
        return list(zip(cleans, problems, strict=True))

    def _unknown_in(self, data: dict[str, Any]) -> list[Violation]:
        if data.keys() <= self.columns.keys():
            return []
        return [
            Violation(
                column=column,
                rule="unknown",
                value=_jsonable(data[column]),
                message=f"column {column!r} is not in the contract",
            )
            for column in sorted(set(data) - set(self.columns))
        ]

    def violations_in(self, data: dict[str, Any], columns: Iterable[str]) -> list[Violation]:
        """The rules ``data`` breaks in ``columns`` alone (an unknown column is no violation here): what
        ``check`` finds in them, without checking the rest of the record.

        >>> contract = DataContract(dataset="d", version="1", entity_key="id", timestamp="ts",
        ...     columns={"id": {"type": "str"}, "ts": {"type": "datetime"},
        ...              "age": {"type": "int", "min": 18, "max": 99}})
        >>> [(p.column, p.rule) for p in contract.violations_in({"age": 7.5, "extra": 1}, ["age", "nope"])]
        [('age', 'type')]
        """
        return self.violations_in_many([data], columns)[0]

    def violations_in_many(self, records: Sequence[dict[str, Any]], columns: Iterable[str]) -> list[list[Violation]]:
        """``violations_in`` of each record, a column at a time (as ``check_many``)."""
        wanted = set(columns)
        found: list[list[Violation]] = [[] for _ in records]
        for column, rule in self.columns.items():  # in the contract's order, as ``check`` lists them
            if column in wanted:
                for index, broken in _check_column(column, rule, [data.get(column) for data in records])[1].items():
                    found[index] += broken
        return found

    def check_label(self, value: Any) -> tuple[Any, list[Violation]]:
        """Coerce an outcome to the label column's type; a missing outcome is a violation too.

        >>> contract = DataContract(dataset="d", version="1", entity_key="id", timestamp="ts", label="y",
        ...     columns={"id": {"type": "str"}, "ts": {"type": "datetime"},
        ...              "y": {"type": "int", "nullable": True, "categories": [0, 1]}})
        >>> contract.check_label(1)[0], [p.rule for p in contract.check_label(7)[1]]
        (1, ['category'])
        """
        if self.label is None:
            return None, [Violation(column="label", rule="unknown", value=None, message="the contract has no label")]
        rule = self.columns[self.label].model_copy(update={"nullable": False})
        return _check_value(self.label, rule, value)

    def record_problem(self, data: dict[str, Any], most: int = 5) -> str | None:
        """The rules ``data`` breaks (the first ``most``), in words; None when this contract holds it.

        >>> contract = DataContract(dataset="d", version="1", entity_key="id", timestamp="ts",
        ...     columns={"id": {"type": "str"}, "ts": {"type": "datetime"}, "x": {"type": "float", "max": 10}})
        >>> contract.record_problem({"id": "a", "ts": "2026-01-01T00:00:00Z", "x": 1.0}) is None
        True
        >>> contract.record_problem({"id": "a", "ts": "2026-01-01T00:00:00Z", "x": 1e308})
        'x=1e+308 outside [None, 10.0]'
        """
        return self.record_problems([data], most)[0]

    def record_problems(self, records: Sequence[dict[str, Any]], most: int = 5) -> list[str | None]:
        """``record_problem`` of each record, checked a column at a time (``check_many``)."""
        return ["; ".join(v.message[:200] for v in broken[:most]) or None for _, broken in self.check_many(records)]

    def label_problem(self, label: Any) -> str | None:
        """Why ``label`` cannot be an outcome of this dataset, in words; None when it can.

        >>> contract = DataContract(dataset="d", version="1", entity_key="id", timestamp="ts", label="y",
        ...     columns={"id": {"type": "str"}, "ts": {"type": "datetime"}, "y": {"type": "int"}})
        >>> contract.label_problem(1) is None, contract.label_problem(1e308), contract.label_problem(float("nan"))
        (True, 'y is outside the 64-bit integer range', 'y is required')
        """
        _, broken = self.check_label(label)
        return "; ".join(v.message for v in broken) or None


def _check_column(column: str, rule: ColumnRule, values: list[Any]) -> tuple[list[Any], dict[int, list[Violation]]]:
    """A column's values coerced, and the rules each breaks by index: at once when they all plainly hold,
    else value by value (``_check_value``), which decides every case the plain test does not."""
    plain = _plainly_valid(rule, values) if values else []
    if plain is not None:
        return plain, {}
    coerced: list[Any] = []
    broken: dict[int, list[Violation]] = {}
    for index, value in enumerate(values):
        clean, found = _check_value(column, rule, value)
        coerced.append(clean)
        if found:
            broken[index] = found
    return coerced, broken


def _plainly_valid(rule: ColumnRule, values: list[Any]) -> list[Any] | None:
    """The values coerced when every one is of the column's own type, finite, within its range and among its
    categories; None when any is not (or is null, or a time, which only ``_check_value`` parses)."""
    types = set(map(type, values))
    if rule.type == "float" and types <= {float, int}:
        try:
            coerced = values if types == {float} else list(map(float, values))
        except OverflowError:
            return None
        if not all(map(math.isfinite, coerced)):
            return None
    elif rule.type == "int" and types == {int}:
        coerced = values
        if min(values) < -INT64 - 1 or max(values) > INT64:
            return None
    elif (rule.type == "str" and types == {str}) or (rule.type == "bool" and types == {bool}):
        coerced = values
    else:
        return None
    if rule.type in ("float", "int") and (
        (rule.min is not None and min(coerced) < rule.min) or (rule.max is not None and max(coerced) > rule.max)
    ):
        return None
    if rule.categories is not None and not _among(coerced, rule.categories):
        return None
    return coerced


def _among(values: list[Any], categories: list[Any]) -> bool:
    try:
        return set(values) <= set(categories)
    except TypeError:  # an unhashable category: the value-by-value check decides
        return False


def _check_value(column: str, rule: ColumnRule, value: Any) -> tuple[Any, list[Violation]]:
    """One value coerced to its column's type, and the rules it breaks (coerced is None when it breaks one)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        if rule.nullable:
            return None, []
        return None, [Violation(column=column, rule="nullable", value=None, message=f"{column} is required")]
    try:
        coerced = _coerce(value, rule.type)
    except OutOfRange as exc:
        return None, [Violation(column=column, rule="range", value=_jsonable(value), message=f"{column} {exc}")]
    except (TypeError, ValueError) as exc:
        message = f"{column} must be {rule.type}: {exc}"
        return None, [Violation(column=column, rule="type", value=_jsonable(value), message=message)]
    return coerced, _range_and_category(column, rule, coerced)


def _range_and_category(column: str, rule: ColumnRule, value: Any) -> list[Violation]:
    found = []
    if isinstance(value, int | float) and not isinstance(value, bool):
        if isinstance(value, float) and math.isinf(value):
            found.append(Violation(column=column, rule="range", value=str(value), message=f"{column} must be finite"))
        elif (rule.min is not None and value < rule.min) or (rule.max is not None and value > rule.max):
            found.append(
                Violation(
                    column=column,
                    rule="range",
                    value=value,
                    message=f"{column}={value} outside [{rule.min}, {rule.max}]",
                )
            )
    if rule.categories is not None and value not in rule.categories:
        found.append(
            Violation(
                column=column,
                rule="category",
                value=_jsonable(value),
                message=f"{column}={value!r} not in {rule.categories}",
            )
        )
    return found


class OutOfRange(ValueError):
    """A value of the right type that no column can hold (a 401-digit integer, the year 9999)."""


def _coerce(value: Any, kind: ColumnType) -> Any:
    """The value as ``kind``; TypeError for a wrong type, OutOfRange for a value beyond any range.

    >>> _coerce(10**400, "float")
    Traceback (most recent call last):
    ...
    flywheel.common.contracts.OutOfRange: is beyond the float range (±1.8e308)
    >>> _coerce(1e300, "int")
    Traceback (most recent call last):
    ...
    flywheel.common.contracts.OutOfRange: is outside the 64-bit integer range
    """
    if kind == "int":
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or (isinstance(value, float) and not value.is_integer())
        ):
            raise TypeError(f"got {type(value).__name__} {_short(value)}")
        if not -INT64 - 1 <= value <= INT64:
            raise OutOfRange("is outside the 64-bit integer range")
        return int(value)
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"got {type(value).__name__} {_short(value)}")
        try:
            return float(value)
        except OverflowError:  # an int beyond 1.8e308
            raise OutOfRange("is beyond the float range (±1.8e308)") from None
    if kind == "str":
        if not isinstance(value, str):
            raise TypeError(f"got {type(value).__name__} {_short(value)}")
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise TypeError(f"got {type(value).__name__} {_short(value)}")
        return value
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"not an ISO 8601 time: {_short(value)}") from None
    else:
        raise TypeError(f"got {type(value).__name__} {_short(value)}")
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    try:
        within = TIME_MIN <= moment <= TIME_MAX
    except OverflowError:  # an offset that moves the year 1 or 9999 out of the calendar
        within = False
    if not within:
        raise OutOfRange(f"is outside [{TIME_MIN.date()}, {TIME_MAX.date()}]")
    return moment


def _short(value: Any, limit: int = 80) -> str:
    """A value's repr, cut short: a 10,000-character string must not be echoed in every message."""
    try:
        text = repr(value)
    except (ValueError, RecursionError):  # an int past Python's 4,300 digits, a deep nesting
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else f"{text[:limit]}...({len(text)} chars)"


def _jsonable(value: Any) -> JsonValue:
    return value if isinstance(value, str | int | float | bool) or value is None else repr(value)


def by_dataset(events: Sequence[Any]) -> dict[str, list[int]]:
    """The indexes of a batch's events (anything with a ``dataset``), by dataset, in order: the records each
    contract checks together."""
    found: dict[str, list[int]] = {}
    for index, event in enumerate(events):
        found.setdefault(event.dataset, []).append(index)
    return found


def label_refusal(contracts: dict[str, DataContract], label: LabelObserved | PredictionLabelled) -> str | None:
    """Why a label (as observed, or joined to its answers) names no outcome of a known dataset; None when it does."""
    contract = contracts.get(label.dataset)
    if contract is None:
        return f"no data contract for dataset {label.dataset!r}; known: {sorted(contracts)}"
    return contract.label_problem(label.label)


def load_contract(path: Path) -> DataContract:
    return DataContract.model_validate(yaml.safe_load(path.read_text()))


def load_contracts(datasets_dir: Path) -> dict[str, DataContract]:
    """Every ``<dataset>/contract.yaml`` under the datasets directory, by dataset name."""
    contracts = [load_contract(p) for p in sorted(Path(datasets_dir).glob("*/contract.yaml"))]
    return {c.dataset: c for c in contracts}
