"""Build a MaxMind DB (.mmdb) file that puts chosen networks in chosen countries, for tests, demos
and load tests (e.g. loopback ranges, so synthetic peers come "from" different countries)."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

NAME = "mkdb"
HELP = "build a test .mmdb mapping networks to countries"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--map",
        dest="maps",
        action="append",
        required=True,
        metavar="NETWORK=CC",
        help="put NETWORK in country CC, e.g. 127.86.0.0/16=CN; NETWORK=registered:CC gives a "
        "registered_country only (geoip2-country shape); repeat as needed",
    )
    parser.add_argument("-o", "--output", required=True, metavar="PATH", help="file to write")
    parser.add_argument(
        "--shape",
        choices=("dbip", "geoip2-country"),
        default="dbip",
        help="record shape: DB-IP ({country_code}) or GeoIP2-Country ({country, registered_country}); "
        "default: dbip",
    )
    parser.add_argument(
        "--built", metavar="YYYY-MM-DD", help="build date written in the metadata (default: now)"
    )


def run(args: argparse.Namespace) -> int:
    from ..core.dbbuild import build_database  # needs mmdb-writer: only for this command

    built = datetime.strptime(args.built, "%Y-%m-%d").replace(tzinfo=UTC) if args.built else None
    path = build_database(args.output, args.maps, shape=args.shape, built=built)
    print(f"wrote {path} ({args.shape}, {len(args.maps)} network(s))")
    return 0
