"""``edge label ID true|false``: say whether a wake was meant for the device.

ID is the number or id shown by ``edge log`` (a unique prefix of the id will do),
or ``last``. The latest label wins; earlier ones stay in the history.
"""

from __future__ import annotations

import argparse

from edge.activations.store import check_label
from edge.commands.log import add_log_options, open_log


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("label", help="label an activation true (meant) or false (accidental)")
    p.add_argument("ref", metavar="ID", help="activation number or id from `edge log`, or last")
    p.add_argument("label", metavar="true|false",
                   help="true: the wake was meant; false: an accidental wake")
    add_log_options(p)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    check_label(args.label, "cli")
    with open_log(args) as store:
        before = store.get(args.ref)
        store.label(before["id"], args.label, "cli")
    was = before["label"] if before["label"] == "unknown" else \
        f"{before['label']} ({before['label_source']})"
    print(f"activation {before['n']} ({before['id']}) labelled {args.label} (was {was})")
    return 0
