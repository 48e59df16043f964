"""Turn what an operator typed into events of a topic: parse, wrap in the envelope, validate.

Input is one JSON object, a JSON array of objects, or JSON lines. An object with an
``event_type`` is a full event and is checked as it is; any other object is the
payload alone, wrapped in a fresh envelope (new ``event_id`` and ``correlation_id``,
``producer`` "cli").

>>> from flywheel.schemas import RECORDS_RAW
>>> batch = prepare(RECORDS_RAW, '{"dataset": "loans", "record_id": "r1", "data": {"age": 30}}')
>>> [(e.event_type, e.producer, e.record_id) for e in batch.events], batch.problems
([('RecordSubmitted', 'cli', 'r1')], [])
>>> batch = prepare(RECORDS_RAW, '{"dataset": "loans", "record_id": "r1", "data": {}}\\n{"dataset": "loans"}')
>>> [str(p) for p in batch.problems]
['line 2: record_id: Field required', 'line 2: data: Field required']
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from flywheel.schemas import Event, Topic


@dataclass(frozen=True)
class Problem:
    """Why one input item was refused: where it is, which field, what is wrong."""

    line: int
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.field}: " if self.field else ""
        return f"line {self.line}: {where}{self.message}"


@dataclass
class Batch:
    """The events ready to send, and the problems of the items that are not."""

    events: list[Event] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def items(text: str) -> Iterator[tuple[int, Any]]:
    """Yield ``(line, parsed JSON or the JSONDecodeError)`` for a document, an array or JSON lines."""
    stripped = text.strip()
    if stripped.startswith(("{", "[")):
        try:
            whole = json.loads(stripped)
        except json.JSONDecodeError:
            whole = None  # not one document: read it as JSON lines below
        if isinstance(whole, dict):
            yield 1, whole
            return
        if isinstance(whole, list):
            # Items of an array count as lines: a pretty-printed array has no one line per item.
            yield from enumerate(whole, start=1)
            return
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as exc:
                yield number, exc


def wrap(topic: Topic, item: dict[str, Any], producer: str = "cli") -> Event:
    """The event an input object stands for: a full event as it is, or a payload in a new envelope."""
    if "event_type" in item:
        return topic.event.model_validate(item)
    return topic.event.model_validate({**item, "producer": item.get("producer", producer)})


def prepare(topic: Topic, text: str, producer: str = "cli") -> Batch:
    """Validate every item of the input against the topic's event, keeping line numbers."""
    batch = Batch()
    for line, item in items(text):
        if isinstance(item, json.JSONDecodeError):
            batch.problems.append(Problem(line, "", f"not JSON: {item.msg} (column {item.colno})"))
            continue
        if not isinstance(item, dict):
            batch.problems.append(Problem(line, "", f"expected a JSON object, got {type(item).__name__}"))
            continue
        carried = topic.event.__name__
        if item.get("event_type", carried) != carried:
            message = f"{topic.name} carries {carried}, not {item['event_type']}"
            batch.problems.append(Problem(line, "event_type", message))
            continue
        try:
            event = wrap(topic, item, producer)
        except ValidationError as exc:
            for error in exc.errors():
                where = ".".join(str(p) for p in error["loc"])
                batch.problems.append(Problem(line, where, error["msg"]))
            continue
        batch.events.append(event)
        batch.lines.append(line)
    return batch
