"""What one admission decision costs, next to the raw lookup it is built on and to geoip2.

Figures (nanoseconds per call, median over rounds of one pass over the same random IPv4 addresses):

* ``admit_ns``: ``Geofence.decide(room, address)``: locate in the embedded DB-IP file and evaluate
  the room's policy (a deny-list), i.e. the full decision the host waits for at signaling time;
* ``lookup_ns``: one raw ``maxminddb`` C-extension ``Reader.get(address)`` on the same bytes (the
  locator's own reader of its private copy of the file);
* ``geoip2_country_ns``: ``geoip2.database.Reader.country(address)`` on a GeoIP2-Country-shaped file
  holding, with their real prefix lengths, the DB-IP networks those addresses fall in (built by the
  project's test-DB builder); ``geoip2_file_lookup_ns`` is the raw lookup on that file, for scale;
* ``admit_recorded_ns``: ``Geofence.admit()`` + ``leave()``: decision, registration and a durable
  (SQLite, synchronous=FULL: an fsync) audit write, on a file in a temporary directory;
  ``admit_recorded_normal_ns`` the same with the audit log at synchronous=NORMAL.

Goals: admit_ns <= 1.5 * lookup_ns (issue 12; 2x before it), and admit_ns at least 4x below
geoip2_country_ns.

Run: ``python bench/decision.py [--json]``. Bounded well under 60 s; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import functools
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import geoip2.database
import maxminddb
from geoip2.errors import AddressNotFoundError

from sfu_geofence import AuditLog, Geofence, Locator, RoomPolicy
from sfu_geofence.core.geolocation import embedded_database_path
from sfu_geofence.testing.testdb import Assignment, build_database


def random_ipv4(count: int, seed: int) -> list[str]:
    """Public-looking IPv4 addresses (1.0.0.0 - 223.255.255.255), fixed seed."""
    rnd = random.Random(seed)
    return [
        f"{rnd.randint(1, 223)}.{rnd.randrange(256)}.{rnd.randrange(256)}.{rnd.randrange(256)}"
        for _ in range(count)
    ]


def per_call_ns(
    calls: dict[str, Callable[[str], object]], addresses: list[str], rounds: int
) -> dict[str, float]:
    """Per name, the median over ``rounds`` of the mean cost of one call over all ``addresses``.

    The calls are interleaved round by round, so that a neighbour's load (2 shared cores) weighs on
    each of them alike; the cost of the loop itself is measured the same way and subtracted.
    """
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        start = time.perf_counter_ns()
        for address in addresses:
            _noop(address)
        overhead = time.perf_counter_ns() - start
        for name, call in calls.items():
            start = time.perf_counter_ns()
            for address in addresses:
                call(address)
            samples[name].append((time.perf_counter_ns() - start - overhead) / len(addresses))
    return {name: statistics.median(values) for name, values in samples.items()}


def _noop(address: str) -> None:
    return None


def geoip2_shaped_file(addresses: list[str], directory: Path) -> Path:
    """A GeoIP2-Country file with the DB-IP networks (and countries) of ``addresses``."""
    networks: dict[str, str] = {}
    with maxminddb.open_database(str(embedded_database_path())) as reader:
        for address in addresses:
            record, prefix = reader.get_with_prefix_len(address)
            if isinstance(record, dict) and isinstance(record.get("country_code"), str):
                networks[f"{address}/{prefix}"] = record["country_code"]
    assignments = []
    for network, country in networks.items():
        try:
            assignments.append(Assignment.parse(f"{network}={country}"))
        except ValueError:
            continue  # a code outside ISO 3166-1 (none expected)
    return build_database(directory / "geoip2-country.mmdb", assignments, shape="geoip2-country")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object, last line")
    parser.add_argument("--addresses", type=int, default=10_000, help="random IPv4 addresses (default 10000)")
    parser.add_argument(
        "--rounds", type=int, default=15, help="passes per figure; the median is kept (default 15)"
    )
    parser.add_argument("--seed", type=int, default=20260601)
    args = parser.parse_args(argv)

    def progress(message: str) -> None:
        print(f"[decision bench] {message}", file=sys.stderr, flush=True)

    addresses = random_ipv4(args.addresses, args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        progress(f"building a GeoIP2-Country-shaped file for {len(addresses)} addresses")
        geoip2_file = geoip2_shaped_file(addresses, directory)

        locator = Locator()
        fence = Geofence(lambda request: None, locator=locator, audit=AuditLog(directory / "audit.sqlite"))
        fence.set_policy("room", RoomPolicy.deny("CN", "IR", "KP", "RU"))
        # The locator reads a private copy of the file (docs/operations.md): the baseline reads the same
        # copy, as a second mapping of the file would compete with it for the CPU cache.
        raw = locator.reader
        country_reader = geoip2.database.Reader(str(geoip2_file))
        geoip2_raw = maxminddb.open_database(str(geoip2_file))

        decide = functools.partial(fence.decide, "room")  # a C-level wrapper, like raw.get itself

        def country(address: str) -> object:
            try:
                return country_reader.country(address)
            except AddressNotFoundError:
                return None

        serial = iter(range(10**9))

        def admit_recorded(address: str) -> object:
            participant = f"p{next(serial)}"
            decision = fence.admit("room", participant, address)
            fence.leave("room", participant)
            return decision

        # Both files answer alike (a check that the comparison is fair), and every cache is warm.
        agree = sum(
            decision.country == (result.country.iso_code if result else None)
            for decision, result in ((decide(a), country(a)) for a in addresses)
        )
        progress(f"GeoIP2-shaped file agrees with DB-IP on {agree} of {len(addresses)} addresses")
        progress("lookup_ns, admit_ns, geoip2_country_ns (interleaved rounds)")
        timings = dict(
            per_call_ns(
                {
                    "lookup_ns": raw.get,
                    "admit_ns": decide,
                    "geoip2_country_ns": country,
                    "geoip2_file_lookup_ns": geoip2_raw.get,
                },
                addresses,
                args.rounds,
            )
        )
        progress("admit_recorded_ns: Geofence.admit + leave with a durable audit write (fewer addresses)")
        timings.update(per_call_ns({"admit_recorded_ns": admit_recorded}, addresses[:500], 3))
        fence.close()
        fence = Geofence(
            lambda request: None, audit=AuditLog(directory / "audit-normal.sqlite", synchronous="NORMAL")
        )
        fence.set_policy("room", RoomPolicy.deny("CN", "IR", "KP", "RU"))
        progress("admit_recorded_normal_ns: the same with the audit log at synchronous=NORMAL")
        timings.update(per_call_ns({"admit_recorded_normal_ns": admit_recorded}, addresses[:5000], 3))
        lookup, admit, g2 = (timings[k] for k in ("lookup_ns", "admit_ns", "geoip2_country_ns"))
        figures: dict[str, object] = {k: round(v, 1) for k, v in timings.items()}
        figures.update(
            {
                "admit_over_lookup": round(admit / lookup, 2),
                "geoip2_over_admit": round(g2 / admit, 2),
                "goal_admit_le_2x_lookup": admit <= 2 * lookup,
                "goal_admit_le_1_5x_lookup": admit <= 1.5 * lookup,
                "goal_admit_4x_below_geoip2": g2 >= 4 * admit,
                "addresses": len(addresses),
                "geoip2_file_agrees": agree,
                "rounds": args.rounds,
                "seed": args.seed,
                "admit_database": fence.database.label,
                "geoip2_database": "GeoIP2-Country-shaped file built by sfu_geofence.testing.testdb from the "
                "DB-IP networks of the same addresses",
                "attribution": fence.database.attribution,
            }
        )
        geoip2_raw.close()
        country_reader.close()
        fence.close()  # and the locator's reader, the baseline's

    if not args.json:
        for key, value in figures.items():
            print(f"{key:>28}  {value}")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
