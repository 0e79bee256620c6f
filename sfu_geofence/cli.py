"""The ``sfu-geofence`` command (minimal: ``serve`` only, until the core's subcommands are merged)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .server import serve


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="sfu-geofence", description="Per-country participant filter for WebRTC SFUs."
    )
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub = commands.add_parser(serve.NAME, help=serve.HELP, description=serve.__doc__)
    serve.add_arguments(sub)
    sub.set_defaults(run=serve.run)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: sys.argv[1:]); returns the exit status."""
    args = parser().parse_args(argv)
    try:
        status: int = args.run(args)
    except (ValueError, OSError) as exc:
        print(f"sfu-geofence {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return status


if __name__ == "__main__":
    sys.exit(main())
