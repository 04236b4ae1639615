"""Test configuration. Fixture modules live in tests/fixtures/ and are listed here."""

pytest_plugins = [
    "tests.fixtures.alsa",
    "tests.fixtures.audio",
    "tests.fixtures.browser",
    "tests.fixtures.fuzz",
    "tests.fixtures.hardware",
    "tests.fixtures.https",
    "tests.fixtures.models",
    "tests.fixtures.mqtt",
]
