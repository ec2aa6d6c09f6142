"""One module per ``ferlab`` verb, each with ``add_parser(subparsers)``."""
