"""Credentials kept in files (TLS keys, a broker password, a bearer token): checked to exist,
read at each use so fixing a file needs no restart, and never logged.

Shared by everything that talks to the network: the MQTT connection, the upload
senders, the dashboard.
"""

from __future__ import annotations

from pathlib import Path

from edge.errors import UploadError


def reason(exc: BaseException) -> str:
    """The short human reason inside a network or file error."""
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def need_file(path: str, key: str) -> None:
    """A PEM file named by config key ``key`` must exist ('' names none)."""
    if path and not Path(path).is_file():
        raise UploadError(f"{key} = {path!r}: no such file; give the path of a PEM file")


def need_tls_files(section: str, ca: str, cert: str, key: str) -> None:
    """The CA, client certificate and key of config ``section`` must exist where given."""
    for name, path in (("ca", ca), ("cert", cert), ("key", key)):
        need_file(path, f"{section}.{name}")


def read_secret(path: str, key: str) -> str:
    """A password or token from a file: its first line ('' when ``path`` is '')."""
    if not path:
        return ""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise UploadError(f"cannot read {key} ({path}: {reason(exc)}); make it readable by the "
                          "recorder, mode 0600") from None
    return text.splitlines()[0].strip() if text.strip() else ""
