"""One clip as one byte string: a line of JSON metadata, a newline, then the payload.

The same shape serves the MQTT 3.1.1 envelope, the outbox spool files and the
plaintext inside a sealed clip, so a receiver needs one line of code to split it:

>>> data = pack({"id": "c0ffee"}, b"RIFF...")
>>> head, _, body = data.partition(b"\\n")
>>> unpack(data)
({'id': 'c0ffee'}, b'RIFF...')
"""

from __future__ import annotations

import json
from typing import Any


class BundleError(ValueError):
    """The bytes are not a JSON line followed by a payload."""


def pack(meta: dict[str, Any], body: bytes) -> bytes:
    # json.dumps escapes every control character, so the head never holds a raw newline.
    return json.dumps(meta, separators=(",", ":"), sort_keys=True).encode() + b"\n" + body


def unpack(data: bytes) -> tuple[dict[str, Any], bytes]:
    head, sep, body = data.partition(b"\n")
    if not sep:
        raise BundleError("no metadata line")
    try:
        meta = json.loads(head)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"metadata line is not JSON: {exc}") from None
    if not isinstance(meta, dict):
        raise BundleError("metadata line is not a JSON object")
    return meta, body
