"""Fuzzing the config loader (and the subsystems' checks of a config): any file ends in a
valid Config or one clear ConfigError.

``make fuzz`` runs 10,000 cases per target (HYPOTHESIS_PROFILE=deep); ``make test`` a subset.
"""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

from hypothesis import example, given
from hypothesis import strategies as st

from edge.compose.config import check_config, load_checked_config
from edge.config import Config, build, load_config, validate
from edge.errors import ConfigError
from tests.fixtures.fuzz import no_hang
from tests.fuzz_strategies import TEXT, config_documents, to_toml

EXAMPLE = (Path(__file__).parent.parent / "config.example.toml").read_text()


def load_text(tmp: Path, text: str | bytes) -> Config | ConfigError:
    path = tmp / "fuzz.toml"
    if isinstance(text, str):
        path.write_text(text, encoding="utf-8")
    else:
        path.write_bytes(text)
    with no_hang(5.0, "load_config"):
        try:
            return load_checked_config(path)
        except ConfigError as exc:
            return exc


def check_outcome(result: Config | ConfigError) -> None:
    if isinstance(result, ConfigError):
        message = str(result)
        assert message and "\n" not in message, f"not a one-line error: {message!r}"
        assert "Traceback" not in message
        return
    assert isinstance(result, Config)
    # What was accepted passes validation again, unchanged: nothing out of range slipped in.
    again = build(Config, dataclasses.asdict(result), "")
    validate(again)
    check_config(again)
    assert again == result


@given(doc=config_documents())
@example(doc={"record": {"silence_s": -1}})
@example(doc={"wake": {"thresholds": {"x": 2.0}}})
@example(doc={"upload": {"mode": "mqtt"}})
@example(doc={"upload": {"retry_min_s": 10.0, "retry_max_s": 1.0}})
@example(doc={"a\nb": 1})
@example(doc={"upload": {"mqtt": {"topic_prefix": "a\0b"}}})
@example(doc={"mqtt": {"base_topic": "a\0b"}})
@example(doc={"state_dir": "/tmp/a\0b"})
@example(doc={"wake": {"threshold": 10**400}})
@example(doc={"wake": {"threshold": 0.0}})
def test_generated_config_documents_load_or_fail_clearly(tmp_path_factory, doc):
    tmp = tmp_path_factory.mktemp("cfg")
    text = to_toml(doc)
    assert tomllib.loads(text) is not None  # the writer itself makes valid TOML
    check_outcome(load_text(tmp, text))


@given(text=st.text(max_size=300))
@example(text="a = " + "[" * 5000 + "]" * 5000)
def test_arbitrary_text_loads_or_fails_clearly(tmp_path_factory, text):
    check_outcome(load_text(tmp_path_factory.mktemp("cfg"), text.encode("utf-8", "replace")))


@given(data=st.binary(max_size=300))
def test_arbitrary_bytes_load_or_fail_clearly(tmp_path_factory, data):
    check_outcome(load_text(tmp_path_factory.mktemp("cfg"), data))


@given(cuts=st.lists(st.tuples(st.integers(0, len(EXAMPLE)), st.integers(0, 20), TEXT),
                     min_size=1, max_size=4))
def test_mutated_example_config_loads_or_fails_clearly(tmp_path_factory, cuts):
    text = EXAMPLE
    for at, drop, insert in cuts:
        text = text[:at] + insert + text[at + drop:]
    check_outcome(load_text(tmp_path_factory.mktemp("cfg"), text))


def test_unreadable_paths_fail_clearly(tmp_path):
    for path in (tmp_path / "missing.toml", tmp_path, Path("/dev/null")):
        try:
            result: Config | ConfigError = load_config(path)
        except ConfigError as exc:
            result = exc
        check_outcome(result)
