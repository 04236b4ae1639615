"""``edge assist key``: the ESPHome API encryption key to paste into Home Assistant."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("assist", help="the voice assistant hand-off (Home Assistant)")
    p.add_argument("action", choices=("key",),
                   help="key: print the API encryption key, making it (0600) if missing")
    p.add_argument("--config", type=Path, help="config file (TOML)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from edge.assist.keys import key_path, load_or_create_key
    from edge.compose.config import load_checked_config

    cfg = load_checked_config(args.config)
    print(load_or_create_key(key_path(cfg)))
    return 0
