"""How long a policy change takes to be acknowledged, and to be enforced on every node of a cluster.

A real ``redis-server`` on 127.0.0.1 (AOF, ``appendfsync always``, files in a temporary directory) and
three nodes (a :class:`RedisPolicyStore` and a :class:`Geofence` each, in this one process: the
figures include sharing one event loop, not a network). Two operators change two rooms' policies at
the same moment through nodes A and B, ``--rounds`` times; node C only listens.

Figures (milliseconds, p50 and p99 over every change):

* ``sqlite_ack_ms``: the baseline, measured in the same run: the same change in the SQLite store of
  a single ``serve`` (synchronous=FULL, a file in a temporary directory);
* ``redis_ack_ms``: ``Geofence.change_policy`` through a node until it returns (Redis has it, fsynced,
  and that node enforces it): what the operator API waits for;
* ``enforced_everywhere_ms``: from the start of a change until the last of the three nodes has
  applied it (its geofence decides under that version); ``enforced_everywhere_after_ack_ms`` the
  part of it after the writing node's acknowledgement (0 when every node had it by then): how far
  the other nodes trail the one the operator called;
* ``catch_ups``: full re-reads the nodes made (a node acknowledged its own change before the
  message of another node's earlier one reached it: a gap, re-read rather than guessed);
* ratios ``redis_ack_over_sqlite_ack`` and ``enforced_everywhere_over_sqlite_ack`` (p50 over p50).

Issue 11 asks every node's decisions to name the newest version within 100 ms: ``within_100ms`` says
whether the p99 of ``enforced_everywhere_ms`` is. Run: ``python -m bench.cluster_policy [--json]``;
bounded (200 rounds take a few seconds); progress to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from sfu_geofence.cluster.redisstore import RedisPolicyStore
from sfu_geofence.core.geofence import Geofence
from sfu_geofence.core.geolocation import Locator
from sfu_geofence.core.policy import RoomPolicy
from sfu_geofence.core.policystore import PolicyListener, PolicyStore, PolicyUpdate
from sfu_geofence.testing.redis import redis_server
from sfu_geofence.testing.testdb import build_database

COUNTRIES = ["DE", "FR", "IR", "RU", "KP", "CU", "SY", "BY", "VE", "MM"]


class TimedStore(RedisPolicyStore):
    """Notes when each version reached its listener (the geofence) on this node; one update of a
    catch-up covers every version up to its own."""

    applied: dict[int, float]

    def listen(self, listener: PolicyListener) -> None:
        self.applied = {}

        def timed(update: PolicyUpdate) -> None:
            listener(update)
            now = time.perf_counter()
            for version in range(max(self.applied, default=0) + 1, update.version + 1):
                self.applied[version] = now

        super().listen(timed)


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50": round(statistics.median(ordered), 3),
        "p99": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 3),
        "max": round(ordered[-1], 3),
    }


async def measure(rounds: int, directory: Path) -> dict[str, object]:
    database = build_database(directory / "countries.mmdb", ["127.1.0.0/16=US", "127.86.0.0/16=CN"])
    sqlite = PolicyStore(directory / "policies.sqlite")
    sqlite_ack: list[float] = []
    for i in range(rounds):
        started = time.perf_counter()
        await sqlite.write(f"room-{i % 2}", RoomPolicy.deny(COUNTRIES[i % 10]))
        sqlite_ack.append((time.perf_counter() - started) * 1000)
    sqlite.close()
    (directory / "redis").mkdir()
    async with redis_server(directory / "redis") as redis:
        stores = [await TimedStore.open(redis.url) for _ in range(3)]
        fences = [Geofence(lambda request: None, locator=Locator(database), policies=s) for s in stores]
        for store in stores:
            await asyncio.wait_for(store.subscribed.wait(), 10)
        redis_version = await stores[0].server_version()
        ack: list[float] = []
        everywhere: list[float] = []
        trailing: list[float] = []
        for i in range(rounds):
            print(f"\rround {i + 1}/{rounds}", end="", file=sys.stderr)

            async def change(fence: Geofence, room: str, country: str) -> tuple[int, float, float]:
                started = time.perf_counter()
                version = (await fence.change_policy(room, RoomPolicy.deny(country))).version
                return version, started, time.perf_counter()

            results = await asyncio.gather(
                change(fences[0], "alpha", COUNTRIES[i % 10]),
                change(fences[1], "beta", COUNTRIES[(i + 3) % 10]),
            )
            newest = max(version for version, _, _ in results)
            while not all(newest in s.applied for s in stores):
                await asyncio.sleep(0.001)
            for version, started, acknowledged in results:
                ack.append((acknowledged - started) * 1000)
                last = max(s.applied[version] for s in stores)
                everywhere.append((last - started) * 1000)
                trailing.append(max(0.0, last - acknowledged) * 1000)
        print(file=sys.stderr)
        for fence in fences:
            fence.close()
        for store in stores:
            await store.aclose()
    figures: dict[str, object] = {
        "rounds": rounds,
        "changes": 2 * rounds,
        "redis_version": redis_version,
        "sqlite_ack_ms": percentiles(sqlite_ack),
        "redis_ack_ms": percentiles(ack),
        "enforced_everywhere_ms": percentiles(everywhere),
        "enforced_everywhere_after_ack_ms": percentiles(trailing),
        "catch_ups": sum(s.catch_ups for s in stores),
    }
    base = statistics.median(sqlite_ack)
    figures["redis_ack_over_sqlite_ack"] = round(statistics.median(ack) / base, 2)
    figures["enforced_everywhere_over_sqlite_ack"] = round(statistics.median(everywhere) / base, 2)
    figures["within_100ms"] = percentiles(everywhere)["p99"] <= 100.0
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=200, help="pairs of simultaneous changes")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object, last line")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as directory:
        figures = asyncio.run(measure(args.rounds, Path(directory)))
    if not args.json:
        for key, value in figures.items():
            print(f"{key}: {value}")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
