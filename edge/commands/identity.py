"""``edge identity [show|rotate]``: the device's random, pseudonymous id."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("identity", help="show or rotate the device's random id")
    p.add_argument("action", nargs="?", choices=("show", "rotate"), default="show",
                   help="show (default) or rotate: make a new, unlinkable id")
    p.add_argument("--config", type=Path, help="config file (TOML)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from edge.compose.config import load_checked_config
    from edge.privacy import identity

    cfg = load_checked_config(args.config)
    if args.action == "rotate":
        old, new = identity.rotate(cfg.state_path)
        print(f"device id rotated: {old or '(none)'} -> {new}")
        print("receivers now see a new device; a running recorder uses it after a restart")
        return 0
    print(identity.device_id(cfg.state_path))
    return 0
