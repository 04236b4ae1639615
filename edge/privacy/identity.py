"""The device's pseudonymous identity: a random id made on first run, rotatable.

It is the only thing that tells one device's clips from another's. It is not
derived from the hostname, a MAC address, a serial number or an account, so it
reveals none of them; ``edge identity rotate`` replaces it, after which receivers
see a new, unlinkable device.

>>> device_id(Path("/tmp/state"))      # doctest: +SKIP
'3f9a1c0d5e7b2a41'
"""

from __future__ import annotations

import logging
import re
import secrets
from pathlib import Path

from edge.files import atomic_write

log = logging.getLogger(__name__)

ID_FILE = "device_id"
_VALID = re.compile(r"[0-9a-f]{16}")


def _new() -> str:
    return secrets.token_hex(8)


def _read(path: Path) -> str | None:
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    if _VALID.fullmatch(text):
        return text
    log.warning("device id file %s is not a device id; making a new one", path)
    return None


def device_id(state_dir: Path) -> str:
    """The device id stored in ``state_dir``; made (0600) on first use."""
    path = state_dir / ID_FILE
    current = _read(path)
    if current is not None:
        return current
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    new = _new()
    atomic_write(path, (new + "\n").encode(), mode=0o600)
    log.info("made a new random device id")
    return new


def rotate(state_dir: Path) -> tuple[str | None, str]:
    """Replace the device id; return (old, new)."""
    path = state_dir / ID_FILE
    old = _read(path)
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    new = _new()
    while new == old:
        new = _new()
    atomic_write(path, (new + "\n").encode(), mode=0o600)
    return old, new
