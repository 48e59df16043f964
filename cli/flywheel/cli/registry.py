"""Reading the registry's answers tolerantly: its API may list models and aliases in a few shapes.

>>> model_names([{"name": "loans-approval"}, "churn"])
['loans-approval', 'churn']
>>> model_names({"models": [{"name": "a"}]})
['a']
>>> champion_of({"name": "a", "aliases": {"champion": "3", "previous": "2"}})
'3'
>>> champion_of({"aliases": {"champion": {"version": 4}}})
'4'
>>> champion_of({"aliases": [{"alias": "champion", "version": "5"}]})
'5'
>>> champion_of({"champion": {"version": "6"}}), champion_of({"aliases": {}})
('6', None)
"""

from __future__ import annotations

from typing import Any


def model_names(listing: Any) -> list[str]:
    """Model names from ``GET /models``: a list of names or objects, bare or under ``models``."""
    if isinstance(listing, dict):
        listing = listing.get("models", [])
    names = []
    for item in listing or []:
        name = item.get("name") or item.get("model_name") if isinstance(item, dict) else item
        if name:
            names.append(str(name))
    return names


def _version(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("version")
    return None if value is None else str(value)


def champion_of(detail: Any) -> str | None:
    """The champion's version from ``GET /models/{name}``, or None when it has none."""
    if not isinstance(detail, dict):
        return None
    aliases = detail.get("aliases")
    if isinstance(aliases, dict) and "champion" in aliases:
        return _version(aliases["champion"])
    if isinstance(aliases, list):
        for alias in aliases:
            if isinstance(alias, dict) and alias.get("alias") == "champion":
                return _version(alias)
    if "champion" in detail:
        return _version(detail["champion"])
    return None
