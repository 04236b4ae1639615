"""``edge stats``: listening hours, accidental wakes per hour, per model and threshold."""

from __future__ import annotations

import argparse
import json

from edge.activations.store import parse_since
from edge.commands.log import add_log_options, open_log


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("stats", help="false activations per listening hour, and their lengths")
    add_log_options(p)
    p.add_argument("--since", metavar="DATE", help="from DATE on: YYYY-MM-DD, an ISO time "
                                                   "(UTC), or an age like 7d")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from edge.activations.stats import compute, render

    since = parse_since(args.since) if args.since else None
    with open_log(args) as store:
        report = compute(store, since)
    print(json.dumps(report, indent=1) if args.json else render(report))
    return 0
