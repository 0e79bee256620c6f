"""What the Janus gate adds to a VideoRoom join: the same join straight to Janus and through the gate.

Figures (milliseconds, median and p95 over ``--joins`` joins of each kind, interleaved so that both
see the same machine): ``direct_ms`` (a publisher's ``join`` POSTed to Janus's HTTP API until its
``joined`` event arrives on the long poll), ``gated_ms`` (the same through ``sfu-geofence janus``:
the decision, an audit write, the relay of the request and of the event), ``added_ms`` (their
medians' difference) and ``ratio`` (gated/direct medians). Joins only, no media: Janus needs no
interface to gather on, so this runs on loopback, without a namespace.

Run: ``python -m bench.janus_join [--json] [--joins N]``. Needs Debian's janus; bounded (< 60 s).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from sfu_geofence.janus import JanusSession, VideoRoom
from sfu_geofence.janus.videoroom import PLUGIN
from sfu_geofence.janusgate import GateConfig
from sfu_geofence.server.admin_listener import AdminListenerConfig
from sfu_geofence.testing.janus import JanusServer, running_janus
from sfu_geofence.testing.janusgate import gate_client, serving_gate
from sfu_geofence.testing.testdb import build_database

ROOM = 7001


async def one_join(session: JanusSession) -> float:
    handle = await session.attach(PLUGIN)
    started = time.perf_counter()
    await handle.message({"request": "join", "ptype": "publisher", "room": ROOM})
    took = time.perf_counter() - started
    await handle.detach()
    return took * 1000


async def measure(janus: JanusServer, database: Path, joins: int) -> dict[str, float]:
    config = GateConfig(
        janus_url=janus.api_url,
        admin_url=janus.admin_url,
        admin_secret=janus.admin_secret,
        port=0,
        admin_listener=AdminListenerConfig(port=0),
        db_path=str(database),
    )
    direct: list[float] = []
    gated: list[float] = []
    async with aiohttp.ClientSession() as http, serving_gate(config) as served:
        owner = await JanusSession.create(http, janus.api_url)
        await VideoRoom(owner).create_room(ROOM, secret="bench")
        plain = await JanusSession.create(http, janus.api_url)
        async with gate_client(served.api_url, "127.1.0.1") as through:
            for _ in range(joins):
                direct.append(await one_join(plain))
                gated.append(await one_join(through.session))
        await plain.destroy()
        await owner.destroy()
    direct_median, gated_median = statistics.median(direct), statistics.median(gated)
    return {
        "joins": joins,
        "direct_ms": round(direct_median, 2),
        "direct_p95_ms": round(statistics.quantiles(direct, n=20)[-1], 2),
        "gated_ms": round(gated_median, 2),
        "gated_p95_ms": round(statistics.quantiles(gated, n=20)[-1], 2),
        "added_ms": round(gated_median - direct_median, 2),
        "ratio": round(gated_median / direct_median, 2),
        "load_average": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--joins", type=int, default=100)
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON line, last")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch)
        database = build_database(directory / "bench.mmdb", ["127.1.0.0/16=US"])
        (directory / "janus").mkdir()
        with running_janus(directory / "janus", interface="lo") as janus:
            figures = asyncio.run(measure(janus, database, args.joins))
    if args.json:
        print(json.dumps(figures))
    else:
        for key, value in figures.items():
            print(f"{key:>15}: {value}", file=sys.stdout)


if __name__ == "__main__":
    main()
