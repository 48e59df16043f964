"""A history replayed as a live stream: a dataset's rows in time order, their labels late.

A dataset declares its replay in ``datasets/<name>/replay.yaml`` (where the rows come from,
the historical day of row 0, the phases of the example); its ``contract.yaml`` says what a
record is. From those two files alone this module makes what a real client sends:

- ``RecordSubmitted`` events, unlabelled, one per row, in time order, each row a historical
  moment (``start + i * step``: a day, an hour), with a record id unique to the run (so a second run on the
  same stack is not refused as a duplicate);
- for each, a ``LabelObserved`` naming its record id, due some seconds after the record was
  sent (uniformly in ``label_delay_s``), so labels arrive late and shuffled.

Everything here is pure but ``read_rows`` (a file) and ``source_path`` (an installed package).
"""

from __future__ import annotations

import csv
import gzip
import importlib.util
import io
import random
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from flywheel.common.contracts import DataContract, load_contract
from flywheel.common.modelspec import load_model_spec, spec_path
from flywheel.demo.measure import ACCURACY, Measure, measure_of
from flywheel.schemas import LabelObserved, RecordSubmitted

PRODUCER = "replay"


class ReplaySource(BaseModel):
    """Where the rows are: a file inside an installed package, or beside ``replay.yaml``."""

    model_config = ConfigDict(extra="forbid")

    package: str | None = Field(default=None, description="An installed package holding the file; None: local.")
    path: str = Field(description="The CSV (optionally .gz): inside the package, or relative to the dataset's dir.")
    licence: str = Field(min_length=1, description="Whose data, under which terms: required, shown in the docs.")
    drop: list[str] = Field(default=[], description="CSV columns that are not in the contract (an index).")
    rename: dict[str, str] = Field(default={}, description="CSV header -> contract column, where snake_case is not.")


class ReplayPhases(BaseModel):
    """Row ranges of the example, as 0-based CSV row numbers."""

    model_config = ConfigDict(extra="forbid")

    history: tuple[int, int] = Field(description="Rows the first model is trained on.")
    stable: tuple[int, int] = Field(description="Rows scored before the change.")
    change: int = Field(description="The first row after the documented change.")
    end: int = Field(description="The stream stops here at the latest.")
    holdout_every: int | None = Field(
        default=None,
        ge=2,
        description="Every Nth row after the change (the Nth, 2Nth, ...) is held out: never streamed, it scores "
        "models on the period after the change. None: every row is streamed.",
    )
    holdout_until: int | None = Field(
        default=None, description="Rows are held out before this row only (None: until end); later ones all stream."
    )

    @model_validator(mode="after")
    def _in_order(self) -> ReplayPhases:
        points = [*self.history, *self.stable, self.change, self.holdout_until or self.change, self.end]
        if points != sorted(points) or self.history[0] >= self.history[1] or self.stable[1] != self.change:
            raise ValueError(
                f"phases must be history < stable < change (= end of stable) <= holdout_until <= end, got {points}"
            )
        return self

    def held_out(self, index: int) -> bool:
        """Whether row ``index`` is held out of the stream.

        >>> p = ReplayPhases(history=(0, 2), stable=(2, 4), change=4, end=20, holdout_every=5)
        >>> [i for i in range(20) if p.held_out(i)], [i for i in range(20) if p.model_copy(
        ...     update={"holdout_until": 15}).held_out(i)]
        ([8, 13, 18], [8, 13])
        """
        every, until = self.holdout_every, self.holdout_until or self.end
        return every is not None and self.change <= index < until and (index - self.change) % every == every - 1


class ReplayClock(BaseModel):
    """Where a row's moment is in its own columns: ``start`` + (``day`` - 1) days + ``hour`` hours."""

    model_config = ConfigDict(extra="forbid")

    day: str = Field(description="The column of the day of the year, from 1.")
    hour: str | None = Field(default=None, description="The column of the hour of the day, from 0.")


class ReplaySpec(BaseModel):
    """``datasets/<name>/replay.yaml``: how a dataset's history is replayed."""

    model_config = ConfigDict(extra="forbid")

    dataset: str
    source: ReplaySource
    start: date = Field(description="The historical day of row 0.")
    step: timedelta = Field(
        default=timedelta(days=1), gt=timedelta(0), description="Time between rows (ISO 8601: P1D, PT1H)."
    )
    clock: ReplayClock | None = Field(
        default=None, description="A row's moment from its own columns (data with gaps); None: start + row * step."
    )
    record_prefix: str = Field(default="", description="Record ids are '<prefix>-<run id>-<row>'.")
    phases: ReplayPhases

    def time_of(self, index: int, row: dict[str, str] | None = None) -> datetime:
        """The historical moment of row ``index`` (UTC; row 0 at midnight of ``start``), or of ``row`` by ``clock``.

        >>> spec = ReplaySpec(dataset="d", source={"path": "x.csv", "licence": "t"}, start="1949-01-01",
        ...     phases={"history": [0, 1], "stable": [1, 2], "change": 2, "end": 3})
        >>> hourly = spec.model_copy(update={"step": timedelta(hours=1)})
        >>> spec.time_of(12000).isoformat(), hourly.time_of(30).isoformat()
        ('1981-11-09T00:00:00+00:00', '1949-01-02T06:00:00+00:00')
        >>> clocked = spec.model_copy(update={"clock": ReplayClock(day="day", hour="hr")})
        >>> clocked.time_of(30, {"day": "3", "hr": "5"}).isoformat()
        '1949-01-03T05:00:00+00:00'
        """
        midnight = datetime.combine(self.start, datetime.min.time(), tzinfo=UTC)
        if self.clock is None:
            return midnight + index * self.step
        if row is None:
            raise ValueError(f"row {index}'s moment is in its own columns ({self.clock.day}): pass the row")
        hour = int(float(row[self.clock.hour])) if self.clock.hour else 0
        return midnight + timedelta(days=int(float(row[self.clock.day])) - 1, hours=hour)


def load_replay(datasets_dir: Path, dataset: str) -> ReplaySpec:
    """The replay spec ``<datasets_dir>/<dataset>/replay.yaml``."""
    path = Path(datasets_dir) / dataset / "replay.yaml"
    if not path.exists():
        raise FileNotFoundError(f"dataset {dataset!r} declares no replay at {path}")
    spec = ReplaySpec.model_validate(yaml.safe_load(path.read_text()))
    if spec.dataset != dataset:
        raise ValueError(f"{path} is for dataset {spec.dataset!r}, not {dataset!r}")
    return spec


def source_path(spec: ReplaySpec, datasets_dir: Path) -> Path:
    """The CSV on this machine: inside the installed package (not imported), or beside the spec."""
    if spec.source.package is None:
        return Path(datasets_dir) / spec.dataset / spec.source.path
    found = importlib.util.find_spec(spec.source.package)
    if found is None or not found.submodule_search_locations:
        raise FileNotFoundError(f"package {spec.source.package!r} is not installed (run `make install`)")
    return Path(next(iter(found.submodule_search_locations))) / spec.source.path


def snake_case(header: str) -> str:
    """A CSV header as a column name.

    >>> snake_case("max sustained wind-speed"), snake_case("Sea-Level Pressure")
    ('max_sustained_wind_speed', 'sea_level_pressure')
    """
    return re.sub(r"[^0-9a-z]+", "_", header.strip().lower()).strip("_")


def parse_rows(text: str, source: ReplaySource) -> list[dict[str, str]]:
    """The CSV's rows as ``{column: text}``, columns renamed to the contract's, ``drop`` left out.

    >>> src = ReplaySource(path="x.csv", licence="test", drop=[""])
    >>> parse_rows(",dew point,rain\\n0,1.5,1\\n", src)
    [{'dew_point': '1.5', 'rain': '1'}]
    """
    reader = csv.reader(io.StringIO(text))
    header = next(reader)
    names = [source.rename.get(h, snake_case(h)) for h in header]
    keep = [i for i, h in enumerate(header) if h not in source.drop]
    return [{names[i]: row[i] for i in keep} for row in reader if row]


def read_rows(spec: ReplaySpec, datasets_dir: Path) -> list[dict[str, str]]:
    """Every row of the dataset's CSV (gzip when it ends in .gz), in file order: time order."""
    path = source_path(spec, datasets_dir)
    raw = path.read_bytes()
    text = (gzip.decompress(raw) if path.suffix == ".gz" else raw).decode("utf-8")
    return parse_rows(text, spec.source)


def typed(value: str, kind: str) -> Any:
    """A CSV cell as the contract's column type; an empty cell is None (the contract decides).

    >>> typed("1.0", "int"), typed("0.25", "float"), typed("", "float"), typed("yes", "str")
    (1, 0.25, None, 'yes')
    """
    if value == "":
        return None
    if kind == "int":
        return int(float(value))
    if kind == "float":
        return float(value)
    if kind == "bool":
        return value.strip().lower() in {"1", "true", "yes"}
    return value


@dataclass(frozen=True)
class Row:
    """One replayed row: its number in the file, the record a client sends, and its outcome."""

    index: int
    record: dict[str, Any]
    label: Any


def rows_as_records(
    rows: list[dict[str, str]],
    contract: DataContract,
    spec: ReplaySpec,
    run_id: str,
    start: int = 0,
    stop: int | None = None,
) -> Iterator[Row]:
    """Rows ``[start, stop)`` as the contract's records, in time order, each given its historical day.

    The contract's entity key gets the record id (one entity a row), its timestamp the row's day;
    its label is held back as the outcome.
    """
    stop = len(rows) if stop is None else min(stop, len(rows))
    for i in range(start, stop):
        row = rows[i]
        record_id = "-".join(p for p in (spec.record_prefix, run_id, str(i)) if p)
        record: dict[str, Any] = {contract.entity_key: record_id, contract.timestamp: spec.time_of(i, row).isoformat()}
        for column in contract.feature_columns:
            record[column] = typed(row.get(column, ""), contract.columns[column].type)
        label = typed(row.get(contract.label, ""), contract.columns[contract.label].type) if contract.label else None
        yield Row(i, record, label)


def submitted(row: Row, dataset: str, entity_key: str) -> RecordSubmitted:
    """The record as a client sends it: without its outcome, which is not known yet."""
    return RecordSubmitted(producer=PRODUCER, dataset=dataset, record_id=row.record[entity_key], data=row.record)


def observed(row: Row, dataset: str, entity_key: str, prediction_id: str | None = None) -> LabelObserved:
    """The row's outcome, naming the record it labels (and the prediction, when one was made)."""
    record_id = row.record[entity_key]
    return LabelObserved(
        producer=PRODUCER,
        dataset=dataset,
        label=row.label,
        record_id=record_id,
        entity_id=record_id,
        prediction_id=prediction_id,
    )


def late_labels(
    rows: Iterable[Row],
    dataset: str,
    entity_key: str,
    *,
    rate_per_s: float,
    label_delay_s: tuple[float, float] = (1.0, 5.0),
    seed: int = 42,
) -> list[tuple[float, LabelObserved]]:
    """Each row's label with the second it is due, in due order: a row sent at ``i / rate`` is
    labelled ``U(label_delay_s)`` later, so labels are late and out of record order.

    >>> c = DataContract(dataset="d", version="1", entity_key="id", timestamp="ts", label="y",
    ...     columns={"id": {"type": "str"}, "ts": {"type": "datetime"}, "x": {"type": "float"},
    ...              "y": {"type": "int", "nullable": True}})
    >>> spec = ReplaySpec(dataset="d", source={"path": "x.csv", "licence": "t"}, start="2000-01-01",
    ...     phases={"history": [0, 1], "stable": [1, 2], "change": 2, "end": 3})
    >>> rows = list(rows_as_records([{"x": str(i), "y": str(i % 2)} for i in range(50)], c, spec, "r"))
    >>> due = late_labels(rows, "d", "id", rate_per_s=10)
    >>> all(1.0 <= t - int(l.record_id.split("-")[1]) / 10 <= 5.0 for t, l in due)
    True
    >>> [l.record_id for _, l in due] != [r.record["id"] for r in rows]  # shuffled
    True
    """
    rng = random.Random(seed)
    due = [
        (n / rate_per_s + rng.uniform(*label_delay_s), observed(row, dataset, entity_key)) for n, row in enumerate(rows)
    ]
    return sorted(due, key=lambda pair: pair[0])


@dataclass(frozen=True)
class Replay:
    """A dataset's replay, loaded: its spec, its contract and its rows, split into the phases."""

    spec: ReplaySpec
    contract: DataContract
    rows: list[dict[str, str]]
    measure: Measure = ACCURACY  # how answers are judged: the dataset's model's task

    @classmethod
    def load(cls, datasets_dir: Path, dataset: str) -> Replay:
        """Everything ``datasets/<dataset>/`` declares, and the rows; nothing is downloaded."""
        spec = load_replay(datasets_dir, dataset)
        contract = load_contract(Path(datasets_dir) / dataset / "contract.yaml")
        if contract.label is None:
            raise ValueError(f"dataset {dataset!r} has no label column: there is no outcome to send late")
        has_model = spec_path(datasets_dir, dataset).exists()  # without one, rows are replayed, never judged
        task = load_model_spec(datasets_dir, dataset).task if has_model else "classification"
        return cls(spec, contract, read_rows(spec, datasets_dir), measure_of(task))

    def phase(self, name: str, run_id: str) -> Iterator[Row]:
        """The rows of ``history``, ``stable`` or ``drifted`` (change to end), in time order; ``streamed``
        and ``holdout`` split ``drifted`` into the rows sent and the rows held out (``holdout_every``)."""
        p = self.spec.phases
        start, stop = {
            "history": p.history,
            "stable": p.stable,
            "drifted": (p.change, p.end),
            "streamed": (p.change, p.end),
            "holdout": (p.change, p.end),
        }[name]
        rows = rows_as_records(self.rows, self.contract, self.spec, run_id, start, stop)
        if name == "streamed":
            return (row for row in rows if not p.held_out(row.index))
        if name == "holdout":
            return (row for row in rows if p.held_out(row.index))
        return rows

    def submitted(self, row: Row) -> RecordSubmitted:
        return submitted(row, self.contract.dataset, self.contract.entity_key)

    def observed(self, row: Row, prediction_id: str | None = None) -> LabelObserved:
        return observed(row, self.contract.dataset, self.contract.entity_key, prediction_id)


@dataclass
class ReplayStream:
    """A replay as the closed-loop scenario's source (``flywheel.demo.scenario.Source``).

    The first model learns ``history``; ``stable`` is scored before the change, ``streamed``
    (``drifted`` without the held-out rows) after it. The data hold one change, so there is
    one way for it to go; a champion "knows" the concept before it when it beats the trivial
    answer (the majority class, or the mean) on the first ``probe_rows`` rows of ``stable`` (sent
    under their own record ids, only to be scored) by ``knows_margin`` (accuracy points, or the
    fraction of the mean's absolute error).
    """

    replay: Replay
    run_id: str
    probe_rows: int = 200
    knows_margin: float = 0.03

    @property
    def dataset(self) -> str:
        return self.replay.contract.dataset

    @property
    def entity_key(self) -> str:
        return self.replay.contract.entity_key

    def history(self) -> Iterator[Row]:
        return self.replay.phase("history", self.run_id)

    def before(self) -> Iterator[Row]:
        return self.replay.phase("stable", self.run_id)

    def after(self) -> Iterator[Row]:
        return self.replay.phase("streamed", self.run_id)

    def probe(self) -> list[Row]:
        rows = self.replay.phase("stable", f"{self.run_id}-probe")
        return [row for _, row in zip(range(self.probe_rows), rows, strict=False)]

    def turns(self) -> list[str]:
        return ["replay"]

    def turn(self, name: str) -> None:
        if name != "replay":
            raise ValueError(f"a replay changes one way only, not {name!r}")

    def change(self) -> str:
        change = self.replay.spec.phases.change
        day = self.replay.spec.time_of(change, self.replay.rows[min(change, len(self.replay.rows) - 1)])
        return f"the data change (row {change}, day {day.date()})"

    @property
    def measure(self) -> Measure:
        return self.replay.measure

    def knows(self, figure: float) -> bool:
        trivial = self.measure.trivial([row.label for row in self.probe()])
        if self.measure.lower_is_better:
            return figure <= trivial * (1 - self.knows_margin)
        return figure >= trivial + self.knows_margin
