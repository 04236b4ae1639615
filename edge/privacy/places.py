"""Where edge-recorder keeps things under ``state_dir``, named once for every module and command.

Audio lives in exactly four places, and ``edge purge`` empties all four:
the local clips directory, the outbox (queued uploads and quarantined entries), the
speech-to-text outbox (utterances waiting for the server, ``assist.mode = "stt"``), and
the opt-in false-activation audio of the activation log. In each, only the names we
issue are ours to delete: ``output.clips_dir`` may be a folder the owner also uses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from edge.config import Config
from edge.files import CLIP_ID, ENTRY_ID

OUTBOX_DIR = "outbox"
STT_OUTBOX_DIR = "stt-outbox"
"""Utterances waiting for the speech-to-text server (assist.mode = "stt")."""
LEDGER_FILE = "ledger.jsonl"
LOCK_FILE = "daemon.lock"
FALSE_AUDIO_DIR = "false_audio"
"""Written by the activation log (edge.activations.store re-exports it)."""


def outbox_dir(cfg: Config) -> Path:
    return cfg.state_path / OUTBOX_DIR


def ledger_path(cfg: Config) -> Path:
    return cfg.state_path / LEDGER_FILE


def lock_path(cfg: Config) -> Path:
    return cfg.state_path / LOCK_FILE


@dataclass(frozen=True)
class AudioPlace:
    """A folder where the device keeps audio, and the file names in it that are its own."""

    label: str
    path: Path
    names: re.Pattern[str]
    """The names that are ours to delete there: the ones we issue (and their temp files)."""
    state_dir: Path
    """The state directory: below it, no symlink is followed (edge.privacy.retention)."""


def _ours(*names: str) -> re.Pattern[str]:
    """Names we write, and the temp files ``edge.files.atomic_write`` makes of them."""
    any_name = "|".join(f"(?:{n})" for n in names)
    return re.compile(rf"(?:{any_name})|\.(?:{any_name})\.tmp-[0-9]+")


_DB = r"outbox\.sqlite3"
_SQLITE_SIDE = r"(?:-wal|-shm|-journal)?"


def audio_places(cfg: Config) -> list[AudioPlace]:
    state, outbox = cfg.state_path, outbox_dir(cfg)
    clip, entry = CLIP_ID.pattern, ENTRY_ID.pattern
    return [
        AudioPlace("local clips", cfg.under_state(cfg.output.clips_dir),
                   _ours(rf"{clip}\.(?:wav|json|sealed)"), state),
        AudioPlace("outbox queue", outbox / "spool", _ours(rf"{entry}\.clip"), state),
        AudioPlace("outbox quarantine", outbox / "quarantine",
                   _ours(rf"{entry}\.clip(?:\.[0-9]+)?", rf"{_DB}\.corrupt-[0-9]+{_SQLITE_SIDE}"),
                   state),
        AudioPlace("outbox index", outbox, _ours(rf"{_DB}{_SQLITE_SIDE}"), state),
        AudioPlace("speech-to-text queue", state / STT_OUTBOX_DIR / "spool",
                   _ours(rf"{entry}\.clip"), state),
        AudioPlace("speech-to-text quarantine", state / STT_OUTBOX_DIR / "quarantine",
                   _ours(rf"{entry}\.clip(?:\.[0-9]+)?", rf"{_DB}\.corrupt-[0-9]+{_SQLITE_SIDE}"),
                   state),
        AudioPlace("false-activation audio", state / FALSE_AUDIO_DIR,
                   _ours(rf"{clip}\.(?:wav|sealed)"), state),
    ]
