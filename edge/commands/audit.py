"""``edge audit [--json]``: exactly what left the device, and when.

The ledger holds every clip (audio) that was sent or tried. With ``[mqtt]`` enabled the
device also publishes metadata that the ledger does not hold message by message (see
``edge.mqtt.disclosure`` for why); the audit then says so, and names each kind of message,
its topic and its fields, so that "nothing has left" is never claimed when something did.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edge.config import Config
    from edge.mqtt.disclosure import Disclosure


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
    also = also_published(cfg)
    if args.json:
        print(json.dumps({"ledger": str(ledger_path(cfg)), "upload": cfg.upload.mode,
                          "ledger_covers": LEDGER_COVERS,
                          "also_published": None if also is None else {
                              "broker": also[0],
                              "messages": [dataclasses.asdict(d) for d in also[1]]},
                          "entries": read.entries, "summary": summary, "queued": queued,
                          "unreadable_lines": read.unreadable}, indent=2))
        return 0
    print(f"ledger: {ledger_path(cfg)} (upload is {cfg.upload.mode})")
    for e in shown(read.entries):
        extra = e.get("error") or e.get("note") or ""
        print(f"{e.get('time', '?'):<29} {e['result']:<11} {e.get('bytes', 0):>9} B  "
              f"{e['clip']:<36}  {e.get('destination') or '-'}{'  ' + extra if extra else ''}")
    if not read.entries:
        print("nothing has left this device: the ledger is empty" if also is None else
              "no audio has left this device: the ledger, which records every clip, is "
              "empty; but metadata has, see below")
    delivered = summary["delivered"]
    print(f"delivered: {delivered['clips']} clip(s), {delivered['bytes'] / 1e6:.2f} MB; "
          f"failed attempts: {summary['counts'].get('failed', 0)}; dropped: "
          f"{summary['counts'].get('dropped', 0)}; unconfirmed (stopped mid-upload): "
          f"{summary['unconfirmed']}; still queued: {max(queued, 0)}")
    if read.unreadable:
        print(f"{read.unreadable} unreadable ledger line(s) skipped (a write cut by power loss)")
    if also is not None:
        broker, messages = also
        print(f"The ledger records only {LEDGER_COVERS}. [mqtt] is enabled, so this device "
              f"also publishes the following to {broker} whenever it is connected: metadata, "
              "never audio, and not in the ledger (the activations themselves are in "
              "`edge log`):")
        for d in messages:
            kept = ("retained: the broker keeps the last one for every later subscriber"
                    if d.retained else "not retained")
            print(f"  {d.topic}: {', '.join(d.carries)}\n      {d.when}; {kept}")
    return 0


LEDGER_COVERS = "the clips (audio) that upload.mode sends or tries to send"


def also_published(cfg: Config) -> tuple[str, list[Disclosure]] | None:
    """What leaves besides the ledger's clips: the broker and each kind of [mqtt] message;
    None when [mqtt] is off (then the ledger is the whole truth)."""
    from edge.mqtt.disclosure import mqtt_disclosures
    from edge.privacy.identity import stored_id

    if not cfg.mqtt.enabled:
        return None
    m = cfg.mqtt
    where = f"{'mqtts' if m.tls else 'mqtt'}://{m.host}:{m.port}"
    return where, mqtt_disclosures(m, stored_id(cfg.state_path))


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
