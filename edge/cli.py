"""The ``edge`` command line: a thin dispatcher over edge/commands/.

Errors a person can fix are printed as one line naming what is wrong and what
would be right; no traceback.
"""

from __future__ import annotations

import os

# One BLAS thread: the device has few cores and the audio loop owns one of them.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import importlib  # noqa: E402
import sys  # noqa: E402

from edge import __version__  # noqa: E402
from edge.errors import EdgeError  # noqa: E402

COMMANDS = {
    "run": "edge.commands.run",
    "replay": "edge.commands.replay",
    "measure": "edge.commands.measure",
    "devices": "edge.commands.devices",
    "models": "edge.commands.models",
    "config": "edge.commands.config",
    "hardware": "edge.commands.hardware",
    "identity": "edge.commands.identity",
    "decrypt": "edge.commands.decrypt",
    "purge": "edge.commands.purge",
    "audit": "edge.commands.audit",
    "log": "edge.commands.log",
    "label": "edge.commands.label",
    "stats": "edge.commands.stats",
    "doctor": "edge.commands.doctor",
    "dashboard": "edge.commands.dashboard",
    "simulate-fleet": "edge.commands.simulate_fleet",
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(2, f"edge: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="edge", description="Privacy-first wake-word edge recorder.")
    parser.add_argument("--version", action="version", version=f"edge-recorder {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for _name, module in COMMANDS.items():
        importlib.import_module(module).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from edge.service.logs import configure

    configure("debug" if args.verbose else "info")
    try:
        return int(args.func(args) or 0)
    except EdgeError as exc:
        print(f"edge: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
