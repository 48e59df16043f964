"""End-to-end tests drive the whole running stack (`make up`) as a user would."""

from tests.integration.conftest import kafka, mlflow_settings, services, store_settings, topics  # noqa: F401
