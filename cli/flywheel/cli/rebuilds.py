"""``flywheel rebuild``'s reading of the answer: which version a rebuild run became, and its verdict."""

from __future__ import annotations

import json
from typing import Any

COMPARISON_TAG = "flywheel.rebuild.comparison"


def version_of_run(model: dict[str, Any], run_id: str) -> dict[str, Any] | None:
    """The registered version made by ``run_id`` in a registry ``GET /models/{name}`` answer, if any.

    >>> version_of_run({"versions": [{"version": "2", "run_id": "r2"}, {"version": "1", "run_id": "r1"}]}, "r1")
    {'version': '1', 'run_id': 'r1'}
    """
    return next((v for v in model.get("versions", []) if v.get("run_id") == run_id), None)


def rebuild_result(model_name: str, rebuilt: dict[str, Any], champion: str | None) -> dict[str, Any]:
    """What a rebuild came to: the new version, what it rebuilt, and the comparison its run recorded.

    >>> tags = {"rebuild_of": "1", COMPARISON_TAG: '{"equal": true, "reasons": []}'}
    >>> result = rebuild_result("m", {"version": "2", "status": "rebuild", "run_id": "r", "tags": tags}, "1")
    >>> result["rebuild_of"], result["comparison"]["equal"], result["champion"]
    ('1', True, '1')
    """
    tags = rebuilt.get("tags", {})
    try:
        comparison = json.loads(tags.get(COMPARISON_TAG, "null")) or {}
    except ValueError:
        comparison = {}
    return {
        "model_name": model_name,
        "version": rebuilt.get("version"),
        "rebuild_of": tags.get("rebuild_of"),
        "status": rebuilt.get("status"),
        "run_id": rebuilt.get("run_id"),
        "champion": champion,
        "comparison": comparison,
    }
