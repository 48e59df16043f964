"""Backward-compatibility rules between a released JSON Schema and the current one.

Within a major version a schema may only gain optional fields: a consumer on the
new schema must read every message written with the old one.
"""

from __future__ import annotations

from typing import Any


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref and ref.startswith("#/$defs/"):
        return root.get("$defs", {})[ref.removeprefix("#/$defs/")]
    return schema


def _types(schema: dict[str, Any], root: dict[str, Any]) -> set[str]:
    schema = _resolve(schema, root)
    if "anyOf" in schema:
        return set().union(*(_types(s, root) for s in schema["anyOf"]))
    if "enum" in schema:
        return {f"enum:{v}" for v in schema["enum"]}
    if "const" in schema:
        return {f"enum:{schema['const']}"}
    if "type" in schema:
        t = schema["type"]
        return set(t) if isinstance(t, list) else {t}
    return {"any"}


def breaking_changes(
    old: dict[str, Any],
    new: dict[str, Any],
    *,
    old_root: dict | None = None,
    new_root: dict | None = None,
    path: str = "",
) -> list[str]:
    """List why ``new`` cannot read what ``old`` allowed; empty when compatible.

    >>> old = {"properties": {"a": {"type": "integer"}}, "required": ["a"]}
    >>> breaking_changes(old, {"properties": {"a": {"type": "integer"}, "b": {"type": "string"}}})
    []
    >>> breaking_changes(old, {"properties": {"a": {"type": "string"}}, "required": ["a"]})
    ['a: type narrowed from integer to string']
    >>> breaking_changes(old, {"properties": {"a": {"type": "integer"}, "b": {"type": "string"}},
    ...                        "required": ["a", "b"]})
    ['b: new required field']
    """
    old_root = old_root or old
    new_root = new_root or new
    old, new = _resolve(old, old_root), _resolve(new, new_root)
    problems: list[str] = []
    old_props, new_props = old.get("properties", {}), new.get("properties", {})
    old_required = set(old.get("required", []))
    for name in sorted(set(new.get("required", [])) - old_required):
        problems.append(f"{path}{name}: new required field")
    for name, old_field in old_props.items():
        where = f"{path}{name}"
        if name not in new_props:
            problems.append(f"{where}: field removed")
            continue
        new_field = new_props[name]
        old_t, new_t = _types(old_field, old_root), _types(new_field, new_root)
        if "any" not in new_t and not old_t <= new_t:
            missing = old_t - new_t
            numeric_widening = missing <= {"integer"} and "number" in new_t
            enum_into_type = all(m.startswith("enum:") for m in missing) and ("string" in new_t)
            if not (numeric_widening or enum_into_type):
                problems.append(f"{where}: type narrowed from {'|'.join(sorted(old_t))} to {'|'.join(sorted(new_t))}")
        old_sub, new_sub = _resolve(old_field, old_root), _resolve(new_field, new_root)
        if "properties" in old_sub and "properties" in new_sub:
            problems += breaking_changes(old_sub, new_sub, old_root=old_root, new_root=new_root, path=f"{where}.")
    return problems
