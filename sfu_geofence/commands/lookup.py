"""Print the country of each address, the database field that decided it and the database build."""

from __future__ import annotations

import argparse
import sys

from ..core.errors import InvalidAddress
from ..core.geolocation import Locator

NAME = "lookup"
HELP = "print the country of IP addresses"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("addresses", nargs="+", metavar="ADDRESS", help="IPv4 or IPv6 address")
    parser.add_argument(
        "--db",
        metavar="PATH",
        help="a MaxMind DB file (GeoIP2/GeoLite2 Country or City, DB-IP); default: the embedded DB-IP "
        "Country Lite",
    )


def run(args: argparse.Namespace) -> int:
    locator = Locator(args.db)
    try:
        info = locator.database
        warning = info.staleness_warning()
        if warning:
            print(f"warning: {warning}", file=sys.stderr)
        status = 0
        width = max(len(a) for a in args.addresses)
        for address in args.addresses:
            try:
                location = locator.locate(address)
            except InvalidAddress as exc:
                print(f"sfu-geofence lookup: error: {exc}", file=sys.stderr)
                status = 1
                continue
            country = location.country or "unknown"
            source = location.source or "not in database"
            print(f"{address:<{width}}  {country:<7}  ({source}, {info.label})")
        if info.attribution:
            print(info.attribution)
        return status
    finally:
        locator.close()
