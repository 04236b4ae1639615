"""One module per ``edge`` subcommand, each with ``add_parser(subparsers)``."""
