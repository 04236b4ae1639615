"""Hypothesis strategies shared by the fuzz tests: TOML documents, hostile text, WAV headers."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import struct
import typing
from typing import Any

from hypothesis import strategies as st

from edge.config import Config

# Text a person or an attacker might type: no surrogates (they cannot be encoded).
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)
NASTY = st.sampled_from([
    "", " ", "-", "--", "---", "-h", "--help", "=", "0", "-1", "1e308", "-1e308", "nan", "inf",
    "-inf", "NaN", "1.5", "99999999999999999999999", "/", ".", "..", "/dev/null", "/dev/zero",
    "/proc/self/mem", "~", "$HOME", "%s%s%n", "\x00", "a\nb", "\u202e", "é", "🎤", "last",
    "true", "false", "show", "rotate", "example", "check", "fetch", "list", "2024-01-01",
    "yesterday", "1d", "2030-13-45", "'", '"', "\\", "*", "#",
])


def toml_scalars() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.booleans(),
        st.integers(min_value=-(2**63), max_value=2**63 - 1),
        st.sampled_from([0, 1, -1, 2**31, 2**63 - 1, -(2**63)]),
        st.floats(allow_nan=True, allow_infinity=True),
        st.sampled_from([0.0, -0.0, 1e-320, 1e308, math.inf, -math.inf, math.nan]),
        TEXT,
        st.dates(),
        st.datetimes(timezones=st.none() | st.just(dt.UTC)),
        st.times(),
    )


def toml_values(depth: int = 2) -> st.SearchStrategy[Any]:
    return st.recursive(
        toml_scalars(),
        lambda inner: st.lists(inner, max_size=4)
        | st.dictionaries(TEXT, inner, max_size=3),
        max_leaves=6,
    )


def _good_value(f: dataclasses.Field[Any], hint: Any) -> st.SearchStrategy[Any]:
    """A value of the field's type, mostly inside its range: drives the loader to success."""
    meta = f.metadata
    if meta.get("choices"):
        return st.sampled_from(meta["choices"])
    lo, hi = meta.get("lo"), meta.get("hi")
    origin = typing.get_origin(hint)
    if hint is bool:
        return st.booleans()
    if hint is int:
        return st.integers(int(lo) if lo is not None else -10, int(hi) if hi is not None else 10)
    if hint is float:
        return st.floats(lo if lo is not None else -10.0, hi if hi is not None else 10.0)
    if hint is str:
        return st.sampled_from(["", "x", "hey_jarvis", "/nonexistent", "edge-recorder"]) | TEXT
    if origin is list:
        return st.lists(st.sampled_from(["hey_jarvis", "alexa"]) | TEXT, max_size=3)
    if origin is dict:
        return st.dictionaries(TEXT, st.floats(lo if lo is not None else 0.0,
                                               hi if hi is not None else 1.0), max_size=2)
    return toml_values()


def table_for(cls: type) -> st.SearchStrategy[dict[str, Any]]:
    """A table shaped like dataclass ``cls``: known keys with good or hostile values, and
    sometimes an unknown key."""
    hints = typing.get_type_hints(cls)
    parts: dict[str, st.SearchStrategy[Any]] = {}
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            parts[f.name] = table_for(hint) | toml_values()  # type: ignore[arg-type]
        else:
            parts[f.name] = _good_value(f, hint) | _good_value(f, hint) | toml_values()
    keyed = st.fixed_dictionaries({}, optional=parts)  # type: ignore[arg-type]
    unknown = st.dictionaries(TEXT, toml_values(), max_size=1)
    return st.tuples(keyed, st.booleans(), unknown).map(
        lambda t: {**t[0], **t[2]} if t[1] and t[2] else t[0])


def config_documents() -> st.SearchStrategy[dict[str, Any]]:
    return table_for(Config)


# ---- a small TOML writer (tomllib only reads) -------------------------------------------

def _string(text: str) -> str:
    # JSON escapes are valid TOML basic-string escapes; astral characters stay literal
    # (JSON would write them as surrogate pairs, which TOML refuses)
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def _key(k: str) -> str:
    return _string(k)


def _scalar(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return _string(v)
    if isinstance(v, dt.datetime | dt.date | dt.time):
        return v.isoformat()
    if isinstance(v, list):
        return "[" + ", ".join(_scalar(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_key(k)} = {_scalar(x)}" for k, x in v.items()) + "}"
    raise TypeError(type(v))


def to_toml(doc: dict[str, Any], prefix: tuple[str, ...] = ()) -> str:
    """TOML text for ``doc``: scalars first, then one [table] per nested dict."""
    lines, tables = [], []
    for k, v in doc.items():
        if isinstance(v, dict) and (not prefix or len(prefix) < 2):
            tables.append((k, v))
        else:
            lines.append(f"{_key(k)} = {_scalar(v)}")
    out = "\n".join(lines) + "\n"
    for k, v in tables:
        path = (*prefix, k)
        out += "\n[" + ".".join(_key(p) for p in path) + "]\n" + to_toml(v, path)
    return out


# ---- WAV headers with extreme values ----------------------------------------------------

def wav_bytes(channels: int, rate: int, bits: int, fmt_tag: int, data: bytes,
              declared: int | None = None, block_align: int | None = None,
              byte_rate: int | None = None, riff_size: int | None = None,
              fmt_size: int = 16) -> bytes:
    """A RIFF/WAVE file whose every header field may lie."""
    u32 = 0xFFFFFFFF
    ba = block_align if block_align is not None else (channels * bits // 8) & 0xFFFF
    br = byte_rate if byte_rate is not None else (rate * ba) & u32
    fmt = struct.pack("<HHIIHH", fmt_tag & 0xFFFF, channels & 0xFFFF, rate & u32, br & u32,
                      ba & 0xFFFF, bits & 0xFFFF)
    fmt = fmt[:fmt_size].ljust(fmt_size, b"\0")
    size = len(data) if declared is None else declared
    body = (b"WAVE" + b"fmt " + struct.pack("<I", fmt_size) + fmt + b"data"
            + struct.pack("<I", size & u32) + data)
    riff = len(body) if riff_size is None else riff_size
    return b"RIFF" + struct.pack("<I", riff & u32) + body


def extreme_wavs() -> st.SearchStrategy[bytes]:
    extreme_u16 = st.sampled_from([0, 1, 2, 3, 8, 255, 256, 65535]) | st.integers(0, 65535)
    rates = st.sampled_from([0, 1, 7999, 8000, 16000, 44100, 384000, 384001, 4_000_000_000,
                             2**32 - 1]) | st.integers(0, 2**32 - 1)
    bits = st.sampled_from([0, 1, 7, 8, 12, 16, 24, 32, 64, 65535])
    tags = st.sampled_from([1, 3, 0, 2, 6, 7, 0xFFFE, 0xFFFF])
    declared = st.none() | st.sampled_from([0, 1, 2**31, 2**32 - 1]) | st.integers(0, 2**32 - 1)
    return st.builds(
        wav_bytes, channels=extreme_u16, rate=rates, bits=bits, fmt_tag=tags,
        data=st.binary(max_size=4096), declared=declared,
        block_align=st.none() | extreme_u16,
        byte_rate=st.none() | st.integers(0, 2**32 - 1),
        riff_size=st.none() | st.sampled_from([0, 4, 2**32 - 1]),
        fmt_size=st.sampled_from([16, 16, 14, 18, 40]),
    )
