"""Checking commands that arrive on ``cmd/<name>``: a closed set, strict JSON, small payloads.

Every payload is a JSON object of at most ``MAX_PAYLOAD`` bytes with exactly the
keys its command allows, each of the right type and range; anything else is
refused with a one-line reason, before any state is touched. An optional ``tx``
(transaction id) is echoed in the result on ``cmd/<name>/result``.

There is no command that starts a recording, turns the recording indicator off,
or returns audio: such a command name is unknown, and refused like any other.

>>> parse("mute", b'{"on": true, "tx": "a1"}')
Command(name='mute', tx='a1', args={'on': True})
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from edge.mqtt.messages import encode

MAX_PAYLOAD = 4096
"""Bytes; a command is a few dozen."""
TX = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
ACTIVATION_REF = re.compile(r"last|[0-9]{1,12}|[0-9a-f][0-9a-f-]{3,35}")
"""ASCII digits only: ``\\d`` also matches other scripts' digits."""
MODEL_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
CONFIRM_TOKEN = re.compile(r"[0-9a-f]{16}")
NAME = re.compile(r"[a-z_]{1,32}")


@dataclass(frozen=True)
class Arg:
    kind: str
    """str, bool or number."""
    required: bool = True
    choices: tuple[str, ...] = ()
    pattern: re.Pattern[str] | None = None
    hint: str = ""


SCHEMAS: dict[str, dict[str, Arg]] = {
    "label": {
        "activation": Arg("str", pattern=ACTIVATION_REF,
                          hint="'last', an activation number, or its id (or a prefix)"),
        "label": Arg("str", choices=("true", "false")),
        "source": Arg("str", required=False, choices=("mqtt", "dashboard")),
    },
    "set_threshold": {
        "model": Arg("str", pattern=MODEL_NAME, hint="a model name from the state message"),
        "threshold": Arg("number"),
    },
    "mute": {"on": Arg("bool")},
    "stats": {"since": Arg("str", required=False, pattern=re.compile(r"[0-9A-Za-z:.+-]{1,40}"),
                           hint="an ISO date or time, or an age such as 24h")},
    "purge": {"confirm": Arg("str", required=False, pattern=CONFIRM_TOKEN,
                             hint="the token from the first cmd/purge result")},
}
NAMES = tuple(SCHEMAS)


class CommandError(ValueError):
    """A command refused before it ran; ``tx`` is echoed when it could be read."""

    def __init__(self, message: str, tx: str | None = None) -> None:
        super().__init__(message)
        self.tx = tx


@dataclass(frozen=True)
class Command:
    name: str
    tx: str | None
    args: dict[str, Any] = field(default_factory=dict)


def parse(name: str, payload: bytes) -> Command:
    """A checked command, or CommandError saying what is wrong and what would be right."""
    if name not in SCHEMAS:
        raise CommandError(f"unknown command {name[:40]!r}; the commands are "
                           f"{', '.join(NAMES)}", _peek_tx(payload))
    if len(payload) > MAX_PAYLOAD:
        raise CommandError(f"payload is {len(payload)} bytes; a command is a JSON object of "
                           f"at most {MAX_PAYLOAD} bytes")
    try:
        obj = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise CommandError("payload is not UTF-8 JSON; send a JSON object such as "
                           f"{example(name)}") from None
    if not isinstance(obj, dict):
        raise CommandError(f"payload is a JSON {_json_type(obj)}, not an object; send e.g. "
                           f"{example(name)}")
    tx = obj.get("tx")
    if tx is not None and not (isinstance(tx, str) and TX.fullmatch(tx)):
        raise CommandError("'tx' must be a string of 1 to 64 letters, digits or _.:-")
    schema = SCHEMAS[name]
    unknown = sorted(k for k in obj if k != "tx" and k not in schema)
    if unknown:
        raise CommandError(f"{name}: unknown key {unknown[0][:40]!r}; allowed: "
                           f"{', '.join([*schema, 'tx'])}", tx)
    args: dict[str, Any] = {}
    for key, arg in schema.items():
        if key not in obj:
            if arg.required:
                raise CommandError(f"{name}: missing {key!r}; send e.g. {example(name)}", tx)
            continue
        args[key] = _check(name, key, obj[key], arg, tx)
    return Command(name, tx, args)


def _check(name: str, key: str, v: Any, arg: Arg, tx: str | None) -> Any:
    where = f"{name}: {key!r}"
    if arg.kind == "bool":
        if not isinstance(v, bool):
            raise CommandError(f"{where} must be true or false, not {_json_type(v)}", tx)
        return v
    if arg.kind == "number":
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise CommandError(f"{where} must be a number, not {_json_type(v)}", tx)
        try:
            number = float(v)  # a 400-digit integer overflows
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            raise CommandError(f"{where} must be a finite number such as 0.6", tx)
        return number
    if not isinstance(v, str):
        raise CommandError(f"{where} must be a string, not {_json_type(v)}", tx)
    if arg.choices and v not in arg.choices:
        raise CommandError(f"{where} = {v[:40]!r}; expected one of {', '.join(arg.choices)}",
                           tx)
    if arg.pattern is not None and not arg.pattern.fullmatch(v):
        raise CommandError(f"{where} = {v[:40]!r} is not allowed; expected {arg.hint}", tx)
    return v


def _json_type(v: Any) -> str:
    if v is None:
        return "null"
    return {bool: "boolean", int: "number", float: "number", str: "string", list: "array",
            dict: "object"}.get(type(v), type(v).__name__)


def _peek_tx(payload: bytes) -> str | None:
    if len(payload) > MAX_PAYLOAD:
        return None
    try:
        obj = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    tx = obj.get("tx") if isinstance(obj, dict) else None
    return tx if isinstance(tx, str) and TX.fullmatch(tx) else None


def example(name: str) -> str:
    return {
        "label": '{"activation": "last", "label": "false"}',
        "set_threshold": '{"model": "hey_jarvis", "threshold": 0.6}',
        "mute": '{"on": true}',
        "stats": '{"since": "24h"}',
        "purge": "{} (then again with the confirm token it returns)",
    }.get(name, "{}")


def result(name: str, tx: str | None, ok: bool, **data: Any) -> str:
    """The JSON answered on ``cmd/<name>/result``."""
    return encode({"command": name, "tx": tx, "ok": ok, **data})


def error(name: str, tx: str | None, message: str) -> str:
    return result(name, tx, False, error=message)


def safe_name(name: str) -> str:
    """The command name as echoed in a result topic (a forged name is cut to a safe one)."""
    return name if NAME.fullmatch(name) else "invalid"
