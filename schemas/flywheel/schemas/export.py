"""Export every event's JSON Schema to ``schemas/jsonschema/`` (``make schemas``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flywheel.schemas.catalogue import TOPICS
from flywheel.schemas.envelope import Event

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "jsonschema"


def json_schema(event: type[Event]) -> dict[str, Any]:
    return event.model_json_schema(mode="serialization")


def schema_path(event: type[Event]) -> Path:
    major = event.SCHEMA_VERSION.split(".")[0]
    return SCHEMA_DIR / f"{event.__name__}.v{major}.json"


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def export() -> list[Path]:
    SCHEMA_DIR.mkdir(exist_ok=True)
    written = []
    for topic in TOPICS.values():
        path = schema_path(topic.event)
        path.write_text(render(json_schema(topic.event)))
        written.append(path)
    catalogue = {
        t.name: {
            "event_type": t.event.__name__,
            "schema_version": t.event.SCHEMA_VERSION,
            "key": t.key,
            "description": t.description,
            "compacted": t.compacted,
            "every_replica": t.every_replica,
            "every_replica_of": sorted(t.every_replica_of),
            "clients_write": t.clients_write,
            "operators_read": t.operators_read,
            "schema": schema_path(t.event).name,
        }
        for t in TOPICS.values()
    }
    (SCHEMA_DIR / "catalogue.json").write_text(render(catalogue))
    return written


if __name__ == "__main__":
    for p in export():
        print(p.relative_to(SCHEMA_DIR.parent))
