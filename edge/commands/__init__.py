"""One module per ``edge`` subcommand, each with ``add_parser(subparsers)``."""

from pathlib import Path

from edge.errors import UsageError


def output_folder(path: Path, flag: str) -> Path:
    """Refuse an output folder option that names an existing file (rather than crash on it)."""
    if path.exists() and not path.is_dir():
        raise UsageError(f"{flag} {path} is a file; give a folder (it is made when missing)")
    return path
