"""Sealing clips to a public key: libsodium sealed boxes, through PyNaCl.

The device holds only the public key (``upload.encrypt_to``), so what it seals it
can no longer read: a stolen SD card reveals nothing, and neither does a broker
or receiver that lacks the private key. A sealed clip is ``MAGIC`` followed by a
sealed box whose plaintext is a bundle (JSON metadata line + WAV).

Keys are 32 bytes, written as base64 (or 64 hex digits) in text files.

>>> private, public = new_keypair()
>>> sealed = Sealer(public).seal(b"hello")
>>> open_sealed(sealed, private)
b'hello'
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from pathlib import Path
from typing import Any

from edge.errors import SealError
from edge.files import create_private

MAGIC = b"EDGE-SEALED-1\n"
SEALED_CONTENT_TYPE = "application/vnd.edge-recorder.sealed"
KEY_BYTES = 32


def decode_key(text: str) -> bytes:
    """32 raw key bytes from base64 or hex text; ValueError when it is neither."""
    text = text.strip()
    if re.fullmatch(r"[0-9a-fA-F]{64}", text):
        return bytes.fromhex(text)
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not base64 or hex") from None
    if len(raw) != KEY_BYTES:
        raise ValueError(f"{len(raw)} bytes instead of {KEY_BYTES}")
    return raw


def encode_key(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def new_keypair() -> tuple[str, str]:
    """A fresh (private, public) key pair, both base64."""
    from nacl.public import PrivateKey

    key = PrivateKey.generate()
    return encode_key(bytes(key)), encode_key(bytes(key.public_key))


class Sealer:
    """Seals bytes to one public key; cannot open them again."""

    def __init__(self, public_key: str) -> None:
        from nacl.public import PublicKey, SealedBox

        self._box: Any = SealedBox(PublicKey(decode_key(public_key)))

    def seal(self, data: bytes) -> bytes:
        return MAGIC + bytes(self._box.encrypt(data))


def sealer_for(encrypt_to: str) -> Sealer | None:
    """The sealer for ``upload.encrypt_to``, or None when encryption at rest is off."""
    return Sealer(encrypt_to) if encrypt_to else None


def is_sealed(data: bytes) -> bool:
    return data.startswith(MAGIC)


def open_sealed(data: bytes, private_key: str) -> bytes:
    from nacl.exceptions import CryptoError
    from nacl.public import PrivateKey, SealedBox

    if not is_sealed(data):
        raise SealError("not a sealed clip (it does not start with the edge-recorder seal marker)")
    try:
        box = SealedBox(PrivateKey(decode_key(private_key)))
        return bytes(box.decrypt(data[len(MAGIC):]))
    except CryptoError:
        raise SealError("this private key does not open the clip; use the key whose public "
                        "half is upload.encrypt_to on the device") from None


def read_private_key(path: Path) -> str:
    try:
        text = path.read_text()
    except OSError as exc:
        raise SealError(f"cannot read private key file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise SealError(f"{path} does not hold a private key (it is not text); give the file "
                        "written by `edge decrypt --new-key`") from None
    try:
        decode_key(text)
    except ValueError as exc:
        raise SealError(f"{path} does not hold a private key ({exc}); give the file written "
                        "by `edge decrypt --new-key`") from None
    return text.strip()


def write_private_key(path: Path, private_key: str) -> None:
    """Write a key file only the owner can read; refuse to overwrite one."""
    try:
        fd = create_private(path)
    except FileExistsError:
        raise SealError(f"{path} already exists; choose a new file name for the key") from None
    with os.fdopen(fd, "w") as f:
        f.write(private_key + "\n")
