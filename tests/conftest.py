"""Test configuration. Fixture modules live in tests/fixtures/ and are listed here."""

pytest_plugins = [
    "tests.fixtures.audio",
    "tests.fixtures.models",
]
