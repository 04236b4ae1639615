"""``edge purge --yes``: delete every clip, the outbox and activation audio, and say what went."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("purge", help="delete every clip, the outbox and activation audio")
    p.add_argument("--yes", action="store_true", help="really delete (without it: only list)")
    p.add_argument("--config", type=Path, help="config file (TOML)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from edge.compose.config import load_checked_config
    from edge.files import check_owned
    from edge.privacy.places import audio_places, ledger_path
    from edge.privacy.retention import files_in, purge

    cfg = load_checked_config(args.config)
    check_owned(cfg.state_path, "state_dir")
    if not args.yes:
        total = 0
        for place in audio_places(cfg):
            files = files_in(place)
            total += len(files)
            print(f"would delete {len(files)} file(s), {_mb(sum(f.stat().st_size for f in files))}"
                  f" from {place.path} ({place.label})")
        print("nothing deleted: run `edge purge --yes` to delete" if total else "nothing to delete")
        return 1 if total else 0
    removed = purge(cfg)
    for r in removed:
        print(f"deleted {r.files} file(s), {_mb(r.bytes)} from {r.path} ({r.label})")
    print(f"total: {sum(r.files for r in removed)} file(s), {_mb(sum(r.bytes for r in removed))}")
    print(f"kept (no audio): the ledger of what left the device ({ledger_path(cfg)}), the "
          "device id and the activation log's metadata")
    return 0


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB"
