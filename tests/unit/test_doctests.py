"""Every docstring example in Flywheel's code runs as a test (River's rule: the example is the test)."""

import doctest
import importlib
import pkgutil

import pytest

import flywheel


def flywheel_modules() -> list[str]:
    names = []
    for info in pkgutil.walk_packages(flywheel.__path__, prefix="flywheel."):
        if not info.name.endswith("__main__"):
            names.append(info.name)
    return sorted(names)


@pytest.mark.parametrize("name", flywheel_modules())
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
