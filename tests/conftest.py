"""Marks each test by the folder it lives in, so `-m "not integration"` and friends work."""

import os
from pathlib import Path

import pytest

from tests.support.stack import log_in_to_mlflow

# Tests build services as a development stack does (`make up` sets it too): the dev credentials are
# accepted. Tests that check what a deployment refuses set their own settings.
os.environ.setdefault("FLYWHEEL_DEV_MODE", "true")
log_in_to_mlflow()  # as its admin, with the stack's own password

FOLDER_MARKS = {"integration": "integration", "e2e": "e2e", "reliability": "reliability"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for part in Path(item.fspath).parts:
            if part in FOLDER_MARKS:
                item.add_marker(FOLDER_MARKS[part])
