"""Fuzzing MQTT command payloads at the device's gate (``edge.mqtt.command_payloads.parse``).

Every command the device acts on passes this gate first, so fuzzing it with the
profile's count (10,000 per target under ``make fuzz``) covers every payload a
malicious client can send. Each case ends in a ``Command`` whose arguments all match
the command's schema, or in one ``CommandError`` line; nothing else, nothing slow.
The device-level test (refused payloads change nothing on a live daemon) is
tests/test_mqtt_device.py::test_fuzzed_command_payloads_get_an_error_result_and_change_nothing.
"""

from __future__ import annotations

import json
import math

from hypothesis import given
from hypothesis import strategies as st

from edge.mqtt.command_payloads import MAX_PAYLOAD, NAMES, SCHEMAS, Command, CommandError, parse
from tests.fixtures.fuzz import no_hang
from tests.fuzz_strategies import NASTY, TEXT

JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), TEXT, NASTY)
JSON = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(TEXT, inner, max_size=4), max_leaves=12)
COMMAND_NAMES = st.sampled_from(NAMES) | TEXT | st.sampled_from(
    ["record", "start", "get_audio", "indicator", "unmute", "MUTE", "mute/result", ""])


@st.composite
def shaped_payloads(draw: st.DrawFn, name: str) -> bytes:
    """A JSON object with the command's own keys (and sometimes others), hostile values."""
    schema = SCHEMAS.get(name, {})
    keys = draw(st.lists(st.sampled_from([*schema, "tx"]) if schema else TEXT, max_size=4))
    obj = {k: draw(JSON) for k in keys}
    if draw(st.booleans()):
        obj.update(draw(st.dictionaries(TEXT, JSON, max_size=2)))
    text = json.dumps(obj, allow_nan=True)
    return text.encode("utf-8", "surrogatepass") if draw(st.booleans()) else text.encode(
        "utf-8", "replace")


def payloads(name: str) -> st.SearchStrategy[bytes]:
    return st.one_of(shaped_payloads(name), st.binary(max_size=300),
                     JSON.map(lambda o: json.dumps(o).encode()),
                     st.integers(1, 200).map(lambda n: b"[" * n + b"]" * n),
                     st.just(b" " * (MAX_PAYLOAD + 1)))


def check(name: str, payload: bytes) -> None:
    with no_hang(2.0, f"parse({name!r})"):
        try:
            cmd = parse(name, payload)
        except CommandError as exc:
            message = str(exc)
            assert message and "\n" not in message and len(message) < 600, message
            return
    assert isinstance(cmd, Command) and cmd.name in SCHEMAS
    schema = SCHEMAS[cmd.name]
    assert set(cmd.args) <= set(schema)
    for key, arg in schema.items():
        if key not in cmd.args:
            assert not arg.required
            continue
        v = cmd.args[key]
        if arg.kind == "bool":
            assert isinstance(v, bool)
        elif arg.kind == "number":
            assert isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        else:
            assert isinstance(v, str)
            if arg.choices:
                assert v in arg.choices
            if arg.pattern is not None:
                assert arg.pattern.fullmatch(v), (key, v)


@given(data=st.data())
def test_any_command_payload_is_a_checked_command_or_one_clear_refusal(data):
    name = data.draw(COMMAND_NAMES)
    check(name, data.draw(payloads(name if name in SCHEMAS else "mute")))


@given(name=st.sampled_from(NAMES), data=st.data())
def test_payloads_shaped_like_each_command_are_checked_field_by_field(name, data):
    check(name, data.draw(shaped_payloads(name)))
