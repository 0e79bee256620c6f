"""A join flood from one address against default ``serve`` under the common 1 024 open-file limit.

What issue 10 measured before admission control: 2 000 joins that never answer, from one loopback
address, ran the server out of descriptors ("Too many open files"), cut an existing call to 7 % of its
packets and disconnected both of its participants. Now the caps refuse them before anything is
allocated, the call keeps its media, and somebody else still joins at once.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sfu_geofence.synthetic.client import SyntheticPeer, everyone_receives, synthetic_tracks
from sfu_geofence.testing.clock import ScheduledClock
from sfu_geofence.testing.process import spawn_serve, stop
from sfu_geofence.testing.wait import eventually

FLOODER = Path(__file__).with_name("flood_process.py")
SERVICE_LIMIT = 1024
"""The soft RLIMIT_NOFILE services commonly get."""
ATTEMPTS = 2000
ATTACKER = "127.0.66.6"
CALL = ("127.0.60.1", "127.0.60.2")
NEWCOMER = "127.0.70.1"
STARTUP = 60.0  # a loaded 2-core machine


def _service_limit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (SERVICE_LIMIT, hard))


def _packets(peer: SyntheticPeer) -> int:
    return sum(meter.packets for meter in peer.meter.tracks)


def _open_files(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_a_join_flood_from_one_address_is_refused_by_the_caps_and_the_call_goes_on(
    tmp_path: Path,
) -> None:
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        server = await spawn_serve(stderr=log, preexec_fn=_service_limit)
    call = [
        SyntheticPeer("", "call", address, name=f"call-{n}", tracks=synthetic_tracks())
        for n, address in enumerate(CALL)
    ]
    flooder: asyncio.subprocess.Process | None = None
    newcomer: SyntheticPeer | None = None
    clock = ScheduledClock()
    try:
        assert server.stdout is not None
        public = (await asyncio.wait_for(server.stdout.readline(), STARTUP)).decode().split()[-1]
        admin = (await asyncio.wait_for(server.stdout.readline(), STARTUP)).decode().split()[3]
        for peer in call:
            peer.url = public
            await peer.join(within=STARTUP)
            assert peer.participant_id is not None, peer.messages
        await eventually(lambda: everyone_receives(call), within=STARTUP)

        # The call's own rate, measured in this run just before the flood.
        before, start = [_packets(p) for p in call], time.monotonic()
        await asyncio.sleep(2.0)
        rates = [(_packets(p) - b) / (time.monotonic() - start) for p, b in zip(call, before, strict=True)]

        peak_files = 0

        async def count_open_files() -> None:
            nonlocal peak_files
            while True:
                peak_files = max(peak_files, _open_files(server.pid))
                await asyncio.sleep(0.05)

        sampler = asyncio.ensure_future(count_open_files())
        before, start = [_packets(p) for p in call], time.monotonic()
        flooder = await asyncio.create_subprocess_exec(
            sys.executable,
            str(FLOODER),
            public,
            ATTACKER,
            "flood-",
            str(ATTEMPTS),
            "500",
            "3",
            stdout=asyncio.subprocess.PIPE,
        )
        await asyncio.sleep(1.0)  # the flood is under way

        newcomer = SyntheticPeer(public, "other-room", NEWCOMER, name="newcomer")
        joining = clock()
        await newcomer.join(publish={}, within=STARTUP)
        join_seconds = clock() - joining
        assert newcomer.participant_id is not None, newcomer.messages

        assert flooder.stdout is not None
        report = json.loads(await asyncio.wait_for(flooder.stdout.readline(), 60))
        elapsed = time.monotonic() - start
        received = [_packets(p) - b for p, b in zip(call, before, strict=True)]
        disconnected = [(p.name, p.close_code, p.messages[-1:]) for p in call if p.closed.is_set()]
        sampler.cancel()

        async with aiohttp.ClientSession() as http, http.get(admin + "/metrics") as response:
            assert response.status == 200
            metrics = {
                (s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(await response.text())
                for s in family.samples
            }
    finally:
        clock.close()
        for peer in [*call, *([newcomer] if newcomer else [])]:
            await peer.close()
        if flooder is not None:
            await stop(flooder)
        await stop(server)
    logged = log_path.read_text(errors="replace")

    # The call: nobody disconnected, its media kept flowing; a newcomer got in at once.
    assert disconnected == []
    for peer, rate, got in zip(call, rates, received, strict=True):
        assert got >= 0.95 * rate * elapsed, (
            f"{peer.name}: {got} packets in {elapsed:.1f} s, {rate:.0f}/s before"
        )
    assert join_seconds < 0.5, f"the newcomer's join took {join_seconds * 1000:.0f} ms"
    # The server: never out of descriptors, far from the limit it was started with.
    assert "Too many open files" not in logged
    assert peak_files < SERVICE_LIMIT - 200, f"{peak_files} descriptors open at the peak"
    # The flood: refused by the caps (before the upgrade, or at join), nothing allocated past them.
    outcomes = report["outcomes"]
    capped = outcomes.get("http 429", 0) + outcomes.get("close 4430", 0)
    assert sum(outcomes.values()) == ATTEMPTS
    assert capped >= 0.95 * ATTEMPTS, outcomes
    cap_refusals = sum(v for (name, _), v in metrics.items() if name == "sfu_geofence_cap_refusals_total")
    assert cap_refusals >= capped, metrics
    admitted = metrics[("sfu_geofence_joins_total", (("outcome", "admitted"), ("reason", "")))]
    assert admitted <= ATTEMPTS - capped + len(call) + 1
