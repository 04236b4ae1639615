"""From a TOML file to a validated ``Config``: each key checked as it is built, then the rules
that join keys (``edge.config.validate``).

>>> cfg = load_config(None)          # the defaults run out of the box
>>> cfg.record.silence_s
0.8
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from edge.config.schema import Config, read_only
from edge.config.validate import validate
from edge.errors import ConfigError

T = TypeVar("T")


def load_config(path: Path | str | None) -> Config:
    """The defaults, overlaid with the TOML file at ``path`` (if any), validated."""
    if path is None:
        return Config()
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {p} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {p} is not valid TOML: {exc}") from None
    except RecursionError:  # tomllib recurses once per nested array or inline table
        raise ConfigError(f"config file {p} nests arrays or tables too deeply to read; a "
                          "config nests tables at most three deep") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:  # ValueError: a NUL in the path
        raise ConfigError(f"cannot read config file {p!s:.200}: {exc}") from None
    cfg: Config = build(Config, data, "")
    validate(cfg)
    return cfg


def replace(cfg: T, **changes: Any) -> T:
    """``cfg`` (a config section) with ``changes``; lists and tables given are frozen."""
    return dataclasses.replace(cfg, **changes)  # type: ignore[type-var]


def build(cls: type, data: Any, prefix: str) -> Any:
    """Check a TOML table key by key into dataclass ``cls``; errors name the full key."""
    where = prefix.rstrip(".") or "the top level"
    if not isinstance(data, Mapping):
        raise ConfigError(f"config key {where} must be a table, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown config key {prefix}{_shown(unknown[0])}; allowed keys in {where} are: "
            f"{', '.join(sorted(fields))}"
        )
    values = {}
    for name, value in data.items():
        f = fields[name]
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            values[name] = build(hint, value, f"{prefix}{name}.")  # type: ignore[arg-type]
        else:
            values[name] = _check(f"{prefix}{name}", value, hint, f.metadata)
    return cls(**values)


def _shown(key: str) -> str:
    """A key as typed when it is plain; quoted when it holds spaces or control characters,
    so an error message stays one readable line."""
    return key if key.isprintable() and key.strip() == key and key else repr(key)


_PLURAL = {bool: "true/false values", int: "whole numbers", float: "numbers", str: "strings"}


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin is tuple:
        return f"a list of {_PLURAL.get(typing.get_args(hint)[0], 'values')}"
    if origin is Mapping:
        return f"a table of {_PLURAL.get(typing.get_args(hint)[1], 'values')}"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(hint))
    return {bool: "true/false", int: "a whole number", float: "a number", str: "a string",
            type(None): "nothing"}.get(hint, str(hint))


def _allowed(hint: Any, meta: Any) -> str:
    text = _type_name(hint)
    if meta.get("choices"):
        text = "one of " + ", ".join(repr(c) for c in meta["choices"])
    elif meta.get("lo") is not None and meta.get("hi") is not None:
        text += f" from {meta['lo']} to {meta['hi']}"
    return text


def _check(key: str, value: Any, hint: Any, meta: Any) -> Any:
    """``value`` as the field holds it (a TOML array as a tuple, a table as a read-only
    mapping), or a ConfigError naming the key, the value and what is allowed."""
    given = value

    def bad(why: str = "") -> ConfigError:
        shown = repr(given)
        shown = shown if len(shown) <= 80 else shown[:76] + "..."  # stays a readable line
        return ConfigError(f"config key {key} = {shown} is not allowed; expected "
                           f"{_allowed(hint, meta)}" + (f" ({why})" if why else ""))

    origin = typing.get_origin(hint)
    if origin is tuple:  # tuple[X, ...]: a TOML array
        item = typing.get_args(hint)[0]
        if not isinstance(value, list | tuple):
            raise bad()
        return tuple(_check(f"{key}[{i}]", v, item, meta) for i, v in enumerate(value))
    if origin is Mapping:  # Mapping[str, X]: a TOML table
        _, item = typing.get_args(hint)
        if not isinstance(value, Mapping):
            raise bad()
        return read_only({str(k): _check(f"{key}.{_shown(k)}", v, item, meta)
                          for k, v in value.items()})
    if hint is bool:
        if not isinstance(value, bool):
            raise bad()
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad()
    elif hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad()
        try:
            value = float(value)
        except OverflowError:  # an integer of hundreds of digits
            raise bad() from None
        if not math.isfinite(value):
            raise bad()
    elif hint is str and not isinstance(value, str):
        raise bad()
    if meta.get("choices") and value not in meta["choices"]:
        raise bad()
    lo, hi = meta.get("lo"), meta.get("hi")
    if isinstance(value, int | float) and lo is not None and value < lo:
        raise bad(meta.get("why_lo", ""))
    if isinstance(value, int | float) and hi is not None and value > hi:
        raise bad()
    return value
