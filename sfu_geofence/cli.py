"""The ``sfu-geofence`` command: wires subcommands, each defined in :mod:`sfu_geofence.commands`.

Adding a subcommand means adding a module there (``NAME``, ``HELP``, ``configure(parser)``,
``run(args) -> int``) and its name to :data:`COMMANDS`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from .core.errors import GeofenceError

#: Subcommand modules under sfu_geofence.commands, in the order --help lists them.
COMMANDS = ("demo", "serve", "janus", "lookup", "mkdb", "loadtest", "report")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="sfu-geofence",
        description="Per-country participant filter for WebRTC SFUs.",
    )
    top.add_argument("-v", "--verbose", action="store_true", help="log debug messages to stderr")
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"sfu_geofence.commands.{name}")
        sub = commands.add_parser(module.NAME, help=module.HELP, description=module.__doc__)
        module.configure(sub)
        sub.set_defaults(run=module.run)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: sys.argv[1:]); returns the exit status."""
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(message)s"
    )
    try:
        status: int = args.run(args)
    except (GeofenceError, ValueError, OSError) as exc:
        print(f"sfu-geofence {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return status
