"""``edge audit [--json]``: exactly what left the device, and when (from the ledger)."""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path
from typing import Any


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("audit", help="show every upload attempt and what left the device")
    p.add_argument("--json", action="store_true", help="one JSON document on stdout")
    p.add_argument("--config", type=Path, help="config file (TOML)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from edge.compose.config import load_checked_config
    from edge.privacy.ledger import read_ledger
    from edge.privacy.places import ledger_path, outbox_dir
    from edge.upload.queue import queued_count

    cfg = load_checked_config(args.config)
    read = read_ledger(ledger_path(cfg))
    queued = queued_count(outbox_dir(cfg))
    summary = summarize(read.entries)
    if args.json:
        print(json.dumps({"ledger": str(ledger_path(cfg)), "upload": cfg.upload.mode,
                          "entries": read.entries, "summary": summary, "queued": queued,
                          "unreadable_lines": read.unreadable}, indent=2))
        return 0
    print(f"ledger: {ledger_path(cfg)} (upload is {cfg.upload.mode})")
    for e in shown(read.entries):
        extra = e.get("error") or e.get("note") or ""
        print(f"{e.get('time', '?'):<29} {e['result']:<11} {e.get('bytes', 0):>9} B  "
              f"{e['clip']:<36}  {e.get('destination') or '-'}{'  ' + extra if extra else ''}")
    if not read.entries:
        print("nothing has left this device: the ledger is empty")
    delivered = summary["delivered"]
    print(f"delivered: {delivered['clips']} clip(s), {delivered['bytes'] / 1e6:.2f} MB; "
          f"failed attempts: {summary['counts'].get('failed', 0)}; dropped: "
          f"{summary['counts'].get('dropped', 0)}; unconfirmed (stopped mid-upload): "
          f"{summary['unconfirmed']}; still queued: {max(queued, 0)}")
    if read.unreadable:
        print(f"{read.unreadable} unreadable ledger line(s) skipped (a write cut by power loss)")
    return 0


def shown(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The entries a person reads: each ``sending`` folds into the result that followed it;
    one with no result (the process stopped mid-upload) shows as ``unconfirmed``."""
    out: list[dict[str, Any]] = []
    open_: dict[str, int] = {}
    for e in entries:
        if e["result"] == "sending":
            open_[e["clip"]] = len(out)
            out.append(dict(e, result="unconfirmed"))
        elif e["result"] in ("delivered", "failed") and e["clip"] in open_:
            out[open_.pop(e["clip"])] = e
        else:
            out.append(e)
    return out


def summarize(entries: list[dict[str, Any]]) -> dict[str, Any]:
    counts = Counter(e["result"] for e in entries)
    ok = [e for e in entries if e["result"] == "delivered"]
    return {
        "counts": dict(counts),
        "unconfirmed": sum(e["result"] == "unconfirmed" for e in shown(entries)),
        "delivered": {"clips": len({e["clip"] for e in ok}),
                      "bytes": sum(int(e.get("bytes", 0)) for e in ok),
                      "destinations": sorted({e.get("destination", "") for e in ok})},
    }
