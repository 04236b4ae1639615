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
import os
import re
import secrets
from pathlib import Path

from edge.files import atomic_write, private_dir

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


def _write(state_dir: Path, new: str) -> None:
    """Store ``new`` (0600), owned like ``state_dir``.

    Run as root (``sudo edge identity rotate``), a new file would be root's, and the service,
    running as the state directory's owner, could no longer read it and would crash-loop:
    so root gives it to that owner (never through a symlink: ``lchown``).
    """
    path = state_dir / ID_FILE
    atomic_write(path, (new + "\n").encode(), mode=0o600)
    if os.geteuid() == 0:
        st = os.stat(state_dir)
        if (st.st_uid, st.st_gid) != (0, 0):
            os.chown(path, st.st_uid, st.st_gid, follow_symlinks=False)


def stored_id(state_dir: Path) -> str | None:
    """The device id stored in ``state_dir``, or None; never makes one (read-only commands)."""
    return _read(state_dir / ID_FILE)


def device_id(state_dir: Path) -> str:
    """The device id stored in ``state_dir``; made (0600) on first use."""
    path = state_dir / ID_FILE
    current = _read(path)
    if current is not None:
        return current
    private_dir(state_dir)
    new = _new()
    _write(state_dir, new)
    log.info("made a new random device id")
    return new


def rotate(state_dir: Path) -> tuple[str | None, str]:
    """Replace the device id; return (old, new)."""
    path = state_dir / ID_FILE
    old = _read(path)
    private_dir(state_dir)
    new = _new()
    while new == old:
        new = _new()
    _write(state_dir, new)
    return old, new
