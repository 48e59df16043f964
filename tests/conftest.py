"""Marks each test by the folder it lives in, so `-m "not integration"` and friends work."""

import os
from pathlib import Path

import pytest

from tests.support.stack import log_in_as_admin

# Tests build services as a development stack does (`make up` sets it too): the dev credentials are
# accepted. Tests that check what a deployment refuses set their own settings.
os.environ.setdefault("FLYWHEEL_DEV_MODE", "true")
log_in_as_admin()  # as its admin, with the stack's own password

FOLDER_MARKS = {"integration": "integration", "e2e": "e2e", "reliability": "reliability", "scale": "scale"}


def pytest_ignore_collect(collection_path: Path) -> bool | None:
    """tests/scale needs the cluster stack `make scale-test` starts for it (and says so): not `make test`'s."""
    if collection_path.name == "scale" and collection_path.parent.name == "tests":
        return not os.environ.get("FLYWHEEL_SCALE_STACK")
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for part in Path(item.fspath).parts:
            if part in FOLDER_MARKS:
                item.add_marker(FOLDER_MARKS[part])
