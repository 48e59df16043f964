"""The scale test's fixtures: those of the reliability suite (the stack whole before and after each test,
a shared model, the counts printed at the end), on the cluster stack `make scale-test` starts."""

from tests.integration.conftest import kafka, mlflow_settings, services, store_settings, topics  # noqa: F401
from tests.reliability.conftest import http, model, pytest_terminal_summary, whole_stack  # noqa: F401
