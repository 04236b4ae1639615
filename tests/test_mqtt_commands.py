"""Command payload checking: strict, small, and safe against anything a publisher sends."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.mqtt import command_payloads as commands
from edge.mqtt.command_payloads import CommandError, parse

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
                    lambda kids: st.lists(kids) | st.dictionaries(st.text(), kids),
                    max_leaves=30)
NAMES = st.sampled_from([*commands.NAMES, "start_recording", "fetch_audio", "led_off", ""])


@settings(max_examples=300, deadline=None)
@given(name=NAMES, payload=st.binary(max_size=600))
def test_random_bytes_are_refused_in_one_line(name: str, payload: bytes) -> None:
    try:
        cmd = parse(name, payload)
    except CommandError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert cmd.name in commands.NAMES  # the rare random bytes that are a valid command


@settings(max_examples=300, deadline=None)
@given(name=NAMES, obj=JSON)
def test_any_json_is_either_a_valid_command_or_refused(name: str, obj: object) -> None:
    payload = json.dumps(obj).encode()
    try:
        cmd = parse(name, payload)
    except CommandError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    schema = commands.SCHEMAS[cmd.name]
    assert set(cmd.args) <= set(schema)
    assert all(k in cmd.args for k, a in schema.items() if a.required)


@pytest.mark.parametrize("payload", [b"[" * 2000 + b"]" * 2000,
                                     b'{"on": true, "x": "' + b"y" * 5000 + b'"}'])
def test_deep_or_huge_payloads_are_refused(payload: bytes) -> None:
    with pytest.raises(CommandError):
        parse("mute", payload)


def test_transaction_id_is_echoed_even_in_errors() -> None:
    with pytest.raises(CommandError) as err:
        parse("set_threshold", b'{"tx": "abc-1", "model": "m", "threshold": "high"}')
    assert err.value.tx == "abc-1"
    out = json.loads(commands.error("set_threshold", "abc-1", str(err.value)))
    assert out == {"command": "set_threshold", "tx": "abc-1", "ok": False,
                   "error": "set_threshold: 'threshold' must be a number, not string"}


def test_the_command_set_is_closed() -> None:
    assert set(commands.NAMES) == {"label", "set_threshold", "mute", "stats", "purge"}
    for name in ("start_recording", "record", "led_off", "fetch_audio", "get_clip"):
        with pytest.raises(CommandError, match="unknown command"):
            parse(name, b"{}")
