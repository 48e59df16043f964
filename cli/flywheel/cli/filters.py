"""The ``--filter`` language of ``flywheel tail``: small, declarative, never ``eval``.

One expression is ``PATH OP VALUE``; several expressions must all hold.

- ``PATH`` is a dotted path into the event's JSON (``data.age``, ``violations.0.rule``);
  a path through a list matches when any element matches.
- ``OP`` is ``=`` / ``!=`` (equal as text, or as numbers when both are numbers),
  ``~`` / ``!~`` (contains, case-insensitive), ``>`` ``>=`` ``<`` ``<=`` (numbers).
- ``PATH?`` alone holds when the path exists and is not null.

>>> event = {"event_type": "AlertRaised", "severity": "critical", "evidence": {"psi": 0.31},
...          "violations": [{"rule": "range"}, {"rule": "nullable"}]}
>>> matches(parse_filters(["severity=critical", "evidence.psi>0.25"]), event)
True
>>> matches(parse_filters(["violations.rule=nullable"]), event)
True
>>> matches(parse_filters(["event_type~alert", "severity!=critical"]), event)
False
>>> matches(parse_filters(["evidence.psi?"]), event), matches(parse_filters(["evidence.ks?"]), event)
(True, False)
>>> parse_filters(["severity"])
Traceback (most recent call last):
...
flywheel.cli.filters.FilterError: 'severity': expected PATH OP VALUE with OP one of = != ~ !~ > >= < <=, or PATH?
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

_OPS_HELP = "= != ~ !~ > >= < <="
_EXPRESSION = re.compile(r"^\s*([A-Za-z0-9_\-.]+)\s*(!=|!~|>=|<=|=|~|>|<)\s*(.*?)\s*$")
_EXISTS = re.compile(r"^\s*([A-Za-z0-9_\-.]+)\?\s*$")
_MISSING = object()


class FilterError(ValueError):
    """A filter expression that does not parse."""


@dataclass(frozen=True)
class Filter:
    """One parsed ``PATH OP VALUE`` expression."""

    path: tuple[str, ...]
    op: str
    value: str

    def holds(self, event: Any) -> bool:
        values = list(_resolve(event, self.path))
        if self.op == "?":
            return any(v is not None and v is not _MISSING for v in values)
        if self.op in ("!=", "!~"):
            positive = Filter(self.path, self.op[1] if self.op == "!~" else "=", self.value)
            return not positive.holds(event)
        return any(_COMPARE[self.op](v, self.value) for v in values if v is not _MISSING)


def parse_filters(expressions: Iterable[str]) -> list[Filter]:
    """Parse every expression, or raise ``FilterError`` naming the one that does not parse."""
    parsed = []
    for text in expressions:
        if exists := _EXISTS.match(text):
            parsed.append(Filter(tuple(exists.group(1).split(".")), "?", ""))
            continue
        found = _EXPRESSION.match(text)
        if not found or not found.group(1):
            raise FilterError(f"{text!r}: expected PATH OP VALUE with OP one of {_OPS_HELP}, or PATH?")
        path, op, value = found.groups()
        if op in (">", ">=", "<", "<=") and _number(value) is None:
            raise FilterError(f"{text!r}: {op} needs a number, not {value!r}")
        parsed.append(Filter(tuple(path.split(".")), op, value))
    return parsed


def matches(filters: Iterable[Filter], event: Any) -> bool:
    """Whether every filter holds for the event."""
    return all(f.holds(event) for f in filters)


def _resolve(node: Any, path: tuple[str, ...]) -> Iterator[Any]:
    if not path:
        yield node
        return
    head, rest = path[0], path[1:]
    if isinstance(node, dict):
        yield from _resolve(node.get(head, _MISSING), rest) if head in node else iter([_MISSING])
    elif isinstance(node, list):
        if head.isdigit():
            index = int(head)
            yield from _resolve(node[index], rest) if index < len(node) else iter([_MISSING])
        else:
            for item in node:
                yield from _resolve(item, path)
    else:
        yield _MISSING


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(str(value))
    except ValueError:
        return None


def _text(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _equal(actual: Any, expected: str) -> bool:
    left, right = _number(actual), _number(expected)
    if left is not None and right is not None:
        return left == right
    return _text(actual) == expected


def _ordered(test: Callable[[float, float], bool]) -> Callable[[Any, str], bool]:
    def compare(actual: Any, expected: str) -> bool:
        left, right = _number(actual), _number(expected)
        return left is not None and right is not None and test(left, right)

    return compare


_COMPARE: dict[str, Callable[[Any, str], bool]] = {
    "=": _equal,
    "~": lambda actual, expected: expected.lower() in _text(actual).lower(),
    ">": _ordered(lambda a, b: a > b),
    ">=": _ordered(lambda a, b: a >= b),
    "<": _ordered(lambda a, b: a < b),
    "<=": _ordered(lambda a, b: a <= b),
}
