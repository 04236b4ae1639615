"""Logging: to journald with structured fields under systemd, else to stderr.

Under systemd (``$JOURNAL_STREAM`` names our stderr) records go to journald
through its native protocol, so each entry carries ``PRIORITY``, ``CODE_FILE``,
``CODE_LINE``, ``CODE_FUNC``, ``LOGGER`` and any ``EDGE_*`` fields the call
site adds::

    log.info("clip %s kept", clip.id, extra=fields(event="clip", clip_id=clip.id))
    # journalctl -u edge-recorder EDGE_EVENT=clip -o verbose

The native protocol is one datagram per entry on /run/systemd/journal/socket:
``KEY=value`` lines, or ``KEY``, newline, a 64-bit little-endian length and the
raw value for a value that holds a newline. An entry too big for one datagram
goes in a sealed memfd passed over the socket, as libsystemd does.

Privacy: no audio ever reaches a log. ``AudioGuard`` (on every handler) replaces
any bytes-like or array argument with its size, and caps the message length, so
even a careless ``log.debug("%s", frame)`` cannot write samples out.
"""

from __future__ import annotations

import array
import contextlib
import logging
import os
import socket
import struct
import sys
from collections.abc import Mapping
from typing import Any, TextIO

JOURNAL_SOCKET = "/run/systemd/journal/socket"
IDENTIFIER = "edge-recorder"
MAX_MESSAGE = 4000
"""Characters of a message kept; the rest is cut (and marked)."""

_PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6,
             logging.DEBUG: 7}
LEVELS = ("debug", "info", "warning", "error")


def fields(**values: Any) -> dict[str, Any]:
    """``extra=`` for a log call: journal fields ``EDGE_<NAME>`` (e.g. ``event`` -> EDGE_EVENT)."""
    return {"journal": {f"EDGE_{k.upper()}": v for k, v in values.items()}}


class AudioGuard(logging.Filter):
    """Keeps audio out of logs: bytes and arrays become their size; long messages are cut."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(_redact(a) for a in record.args)
        elif isinstance(record.args, Mapping):
            record.args = {k: _redact(v) for k, v in record.args.items()}
        record.msg = _redact(record.msg)
        journal = getattr(record, "journal", None)
        if isinstance(journal, Mapping):
            record.journal = {k: _redact(v) for k, v in journal.items()}
        return True


class Withheld(str):
    """What a log shows instead of audio; the same under %s and %r."""

    def __repr__(self) -> str:
        return str(self)


def _redact(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return Withheld(f"<{len(value)} bytes withheld>")
    if isinstance(value, array.array):
        return Withheld(f"<array of {len(value)} withheld>")
    shape = getattr(value, "shape", None)
    if shape is not None and hasattr(value, "dtype"):  # numpy, without importing it
        return Withheld(f"<{value.dtype} array {tuple(shape)} withheld>")
    if isinstance(value, list | tuple) and len(value) > 64:
        return Withheld(f"<sequence of {len(value)} withheld>")
    return value


class _CutFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if len(text) > MAX_MESSAGE and not record.exc_info:
            text = text[:MAX_MESSAGE] + f" [... {len(text) - MAX_MESSAGE} characters cut]"
        return text


class JournalHandler(logging.Handler):
    """Writes records to journald's native socket, with structured fields."""

    def __init__(self, path: str | None = None, identifier: str = IDENTIFIER,
                 level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self.path = path or JOURNAL_SOCKET
        self.identifier = identifier
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.setFormatter(_CutFormatter("%(message)s"))
        self.addFilter(AudioGuard())

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._send(encode(self.entry(record)))
        except Exception:
            self.handleError(record)

    def entry(self, record: logging.LogRecord) -> dict[str, Any]:
        out: dict[str, Any] = {
            "MESSAGE": self.format(record),
            "PRIORITY": _PRIORITY.get(record.levelno, 6 if record.levelno < 30 else 3),
            "SYSLOG_IDENTIFIER": self.identifier,
            "LOGGER": record.name,
            "CODE_FILE": record.pathname,
            "CODE_LINE": record.lineno,
            "CODE_FUNC": record.funcName,
            "THREAD_NAME": record.threadName,
        }
        journal = getattr(record, "journal", None)
        if isinstance(journal, Mapping):
            out.update({_field_name(k): v for k, v in journal.items()})
        return out

    def _send(self, data: bytes) -> None:
        try:
            self._sock.sendto(data, self.path)
        except OSError as exc:
            if exc.errno not in (90, 105):  # EMSGSIZE, ENOBUFS: too big for a datagram
                raise
            self._send_memfd(data)

    def _send_memfd(self, data: bytes) -> None:
        fd = os.memfd_create("journal-entry", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.write(fd, data)
            import fcntl

            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW
                        | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL)
            self._sock.sendmsg([], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                     struct.pack("i", fd))], 0, self.path)
        finally:
            os.close(fd)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.close()
        super().close()


def _field_name(key: str) -> str:
    name = "".join(c if c.isalnum() else "_" for c in key.upper()).lstrip("_")
    return name[:64] or "EDGE_FIELD"


def encode(entry: Mapping[str, Any]) -> bytes:
    """An entry in journald's native wire format."""
    out = bytearray()
    for key, value in entry.items():
        raw = value if isinstance(value, bytes) else str(value).encode("utf-8", "replace")
        if b"\n" in raw:
            out += key.encode() + b"\n" + struct.pack("<Q", len(raw)) + raw + b"\n"
        else:
            out += key.encode() + b"=" + raw + b"\n"
    return bytes(out)


def decode(data: bytes) -> dict[str, str]:
    """The fields of one native-protocol entry (for tests and `edge doctor`)."""
    out: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        nl = data.index(b"\n", pos)
        line = data[pos:nl]
        if b"=" in line:
            key, _, value = line.partition(b"=")
            out[key.decode()] = value.decode("utf-8", "replace")
            pos = nl + 1
        else:
            (size,) = struct.unpack("<Q", data[nl + 1:nl + 9])
            out[line.decode()] = data[nl + 9:nl + 9 + size].decode("utf-8", "replace")
            pos = nl + 9 + size + 1
    return out


def journal_wanted(environ: Mapping[str, str] | None = None, stream: TextIO | None = None,
                   socket_path: str | None = None) -> bool:
    """True when systemd connected our stderr to the journal ($JOURNAL_STREAM = dev:inode)
    and journald's socket is there."""
    env = os.environ if environ is None else environ
    value = env.get("JOURNAL_STREAM", "")
    if not value or not os.path.exists(socket_path or JOURNAL_SOCKET):
        return False
    try:
        dev, ino = (int(x) for x in value.split(":"))
        st = os.fstat((stream or sys.stderr).fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


_command_line_level: str | None = None


def set_command_line_level(level: str | None) -> None:
    """``edge -v`` / ``edge -q``: the level of this whole process, over any config's
    ``log_level`` and ``log_levels`` (None: the config decides)."""
    global _command_line_level
    if level is not None:
        _level(level, "the command line's level")
    _command_line_level = level


def level_in_force(level: str) -> str:
    """The command line's level if it gave one, else ``level``."""
    return _command_line_level or level


def configure(level: str = "info", levels: Mapping[str, str] | None = None,
              journal: bool | None = None,
              stream: TextIO | None = None) -> logging.Handler | None:
    """Set up the root logger for the process; returns the handler it installed, if any.

    ``level`` applies to everything; ``levels`` overrides it per logger
    (``{"edge.upload.uploader": "debug"}``); a level from the command line
    (``set_command_line_level``) overrides both. ``journal`` None decides from the
    environment. Like ``logging.basicConfig``, it does nothing when someone else (a test
    harness, an embedding program) already put a handler on the root logger.
    """
    if _command_line_level is not None:
        level, levels = _command_line_level, {}
    root = logging.getLogger()
    ours = [h for h in root.handlers if getattr(h, "_edge_owned", False)]
    if len(ours) != len(root.handlers):
        return None
    root.setLevel(_level(level, "log_level"))
    for name, lvl in (levels or {}).items():
        logging.getLogger(name).setLevel(_level(lvl, f"log_levels.{name}"))
    for h in ours:
        root.removeHandler(h)
        h.close()
    use_journal = journal_wanted() if journal is None else journal
    handler: logging.Handler
    if use_journal:
        handler = JournalHandler()
    else:
        handler = logging.StreamHandler(stream or sys.stderr)
        # journald stamps its own time: under systemd (stderr to the journal) leave it out
        fmt = "%(levelname)s %(name)s: %(message)s" if os.environ.get("INVOCATION_ID") \
            else "%(asctime)s %(levelname)s %(name)s: %(message)s"
        handler.setFormatter(_CutFormatter(fmt))
        handler.addFilter(AudioGuard())
    setattr(handler, "_edge_owned", True)  # noqa: B010 (a marker on a stdlib handler)
    root.addHandler(handler)
    return handler


def _level(name: str, key: str) -> int:
    if name.lower() not in LEVELS:
        from edge.errors import ConfigError

        raise ConfigError(f"{key} = {name!r} is not a log level; expected one of "
                          f"{', '.join(LEVELS)}")
    return int(getattr(logging, name.upper()))
