"""Where edge-recorder keeps things under ``state_dir``, named once for every module and command.

Audio lives in exactly three places, and ``edge purge`` empties all three:
the local clips directory, the outbox (queued uploads and quarantined entries),
and the opt-in false-activation audio of the activation log.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edge.config import Config

OUTBOX_DIR = "outbox"
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
    label: str
    path: Path
    patterns: tuple[str, ...]
    """Files that are ours to delete there (clips_dir may be any directory)."""


def audio_places(cfg: Config) -> list[AudioPlace]:
    clip_files = ("*.wav", "*.json", "*.sealed", ".*.tmp-*")
    return [
        AudioPlace("local clips", cfg.under_state(cfg.output.clips_dir), clip_files),
        AudioPlace("outbox queue", outbox_dir(cfg) / "spool", ("*.clip", ".*.tmp-*")),
        AudioPlace("outbox quarantine", outbox_dir(cfg) / "quarantine", ("*",)),
        AudioPlace("outbox index", outbox_dir(cfg), ("outbox.sqlite3*",)),
        AudioPlace("false-activation audio", cfg.state_path / FALSE_AUDIO_DIR,
                   ("*.wav", "*.sealed", ".*.tmp-*")),
    ]
