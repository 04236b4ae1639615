"""Checking a config against the subsystems it configures, before anything is built from it.

``load_config`` (edge.config) checks what config values alone can tell. What needs a
subsystem's knowledge is checked here, where every subsystem may be imported: the
``[hardware]`` keys against the board's profile, ``upload.encrypt_to`` as a public key,
and that a device which uploads has a recording light, real pins and chimes (unless
``[security]`` accepts the downgrade). Every command that reads a config file uses
``load_checked_config``.
"""

from __future__ import annotations

from pathlib import Path

from edge.assist.naming import check_assist
from edge.config import Config, load_config
from edge.errors import ConfigError
from edge.hardware.profiles import check_indicator, check_uploading_parts, resolve
from edge.privacy.crypto import decode_key


def check_config(cfg: Config) -> None:
    """Raise ConfigError, naming the key at fault, for the first subsystem check it fails."""
    if cfg.upload.encrypt_to:
        try:
            decode_key(cfg.upload.encrypt_to)
        except ValueError as exc:
            raise ConfigError(f"upload.encrypt_to is not a public key ({exc}); paste the public "
                              "key printed by `edge decrypt --new-key`") from None
    check_assist(cfg.assist)
    spec = resolve(cfg.hardware)
    check_indicator(spec, cfg.upload.mode)
    check_uploading_parts(spec, cfg.upload.mode, cfg.security)


def load_checked_config(path: Path | str | None) -> Config:
    """``load_config`` and then ``check_config``: a config every subsystem accepts."""
    cfg = load_config(path)
    check_config(cfg)
    return cfg
