"""Fault tests use the real brokers of the integration suite."""

from tests.integration.conftest import brokers  # noqa: F401 (fixture)
