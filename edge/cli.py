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
    "assist": "edge.commands.assist",
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


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole command line, or with ``only`` just that command's subparser: each
    command's module is imported to add its parser, and one command should not wait for
    the imports of seventeen it does not run."""
    parser = _Parser(prog="edge", description="Privacy-first wake-word edge recorder.")
    parser.add_argument("--version", action="version", version=f"edge-recorder {__version__}")
    add_log_flags(parser, default=None)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name, module in COMMANDS.items():
        if only is None or name == only:
            importlib.import_module(module).add_parser(sub)
    _log_flags_everywhere(parser)
    return parser


def command_named(argv: list[str]) -> str | None:
    """The command ``argv`` runs, if its first word that is not a log flag names one; None
    otherwise (no command, ``--help``, ``--version``, a mistyped name: the whole parser
    answers those, listing every command)."""
    for word in argv:
        if word in ("-v", "--verbose", "-q", "--quiet"):
            continue
        return word if word in COMMANDS else None
    return None


def add_log_flags(parser: argparse.ArgumentParser, default: object) -> None:
    """``-v``/``-q``: this run's log level, over the config's ``log_level`` (the last wins)."""
    taken = parser._option_string_actions
    for short, long, level, text in (("-v", "--verbose", "debug", "debug logging"),
                                     ("-q", "--quiet", "warning", "warnings and errors only")):
        flags = [f for f in (short, long) if f not in taken]  # `measure --quiet` is its own
        parser.add_argument(*flags, dest="log_flag", action="store_const", const=level,
                            default=default, help=f"{text} (over the config's log_level)")


def _log_flags_everywhere(parser: argparse.ArgumentParser) -> None:
    """Let ``-v``/``-q`` come after any subcommand name too. A subcommand's default is
    SUPPRESS, so a flag given before its name is not reset by it."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for subparser in set(action.choices.values()):
                add_log_flags(subparser, default=argparse.SUPPRESS)
                _log_flags_everywhere(subparser)


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    for word in words:
        # exec cannot pass one (its arguments are C strings); a caller of main() can, and a
        # path holding one would fail deep in open() with a traceback
        if "\x00" in word:
            print(f"edge: error: the argument {word!r} holds a NUL byte, which no name, path or "
                  "value can hold", file=sys.stderr)
            return 2
    args = build_parser(only=command_named(words)).parse_args(words)
    from edge.service.logs import configure, set_command_line_level

    set_command_line_level(args.log_flag)
    configure("info")
    try:
        return int(args.func(args) or 0)
    except EdgeError as exc:
        print(f"edge: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
