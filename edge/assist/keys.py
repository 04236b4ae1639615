"""The ESPHome API encryption key: 32 random bytes, base64, in a 0600 file under state_dir.

Home Assistant asks for this key when it adds the device; ``edge assist key`` prints it,
making it on first use. The key never leaves the device any other way and is never logged.

>>> key = load_or_create_key(Path("/tmp/state/assist.key"))      # doctest: +SKIP
>>> len(decode_key(key, "assist.key"))                           # doctest: +SKIP
32
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
from pathlib import Path

from edge.config import Config
from edge.errors import ConfigError
from edge.files import atomic_write, private_dir

KEY_BYTES = 32


def key_path(cfg: Config) -> Path:
    """Where ``assist.key_file`` is (relative to ``state_dir`` unless absolute)."""
    return cfg.under_state(cfg.assist.key_file)


def new_key() -> str:
    """A fresh key, as ESPHome devices write it: base64 of 32 random bytes."""
    return base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode()


def decode_key(text: str, where: str) -> bytes:
    """The 32 bytes of a base64 key; ``ConfigError`` naming ``where`` when it is not one."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != KEY_BYTES:
        raise ConfigError(f"{where} does not hold an API key (base64 of {KEY_BYTES} bytes); "
                          "delete it and run `edge assist key` to make a new one")
    return raw


def read_key(path: Path) -> str | None:
    """The key stored at ``path`` (checked), or None when there is no file."""
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"assist.key_file {path} cannot be read ({exc})") from None
    decode_key(text, f"assist.key_file {path}")
    mode = os.stat(path).st_mode & 0o777
    if mode & 0o077:
        raise ConfigError(f"assist.key_file {path} is readable by others (mode {mode:o}); "
                          f"run chmod 600 {path}")
    return text


def load_or_create_key(path: Path) -> str:
    """The key at ``path``; made (0600, its folder 0700) when there is none."""
    key = read_key(path)
    if key is not None:
        return key
    private_dir(path.parent)
    key = new_key()
    atomic_write(path, (key + "\n").encode())
    return key
