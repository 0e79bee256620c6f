"""A live policy change on a Janus room through the gate: CN alone is ejected, at once, told why on
its own session; everybody else's media keeps flowing; CN's rejoin is refused naming the country."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import aiohttp
import pytest
from gated import (
    AUTH,
    POLICY,
    ROOM_SECRET,
    address,
    put_policy,
)

from sfu_geofence.janus import JanusError
from sfu_geofence.janus.client import JsonObject
from sfu_geofence.janus.videoroom import PLUGIN, VideoRoom
from sfu_geofence.rtc.ice import use_policy
from sfu_geofence.synthetic.media import AudioClipParams, VideoClipParams
from sfu_geofence.synthetic.meter import ReceiveMeter
from sfu_geofence.testing.clock import ScheduledClock
from sfu_geofence.testing.janusgate import GateClient, ServedGate, gate_client
from sfu_geofence.testing.peers import camera_and_microphone, packets, peer_connections, receiving
from sfu_geofence.testing.wait import eventually

pytestmark = [pytest.mark.janus, pytest.mark.lan]

WITHIN = 30.0
COUNTRIES = ("US", "DE", "HK", "CN")
STAYERS = ("US", "DE", "HK")
INTERVALS = {"audio": AudioClipParams().frame_ms / 1000, "video": 1 / VideoClipParams().fps}
"""Seconds between two frames of the peers' synthetic tracks (Opus 20 ms, VP8 15 fps)."""
EJECTED_WITHIN_S = 0.050


@pytest.mark.slow
@pytest.mark.usefixtures("frozen_heap")
async def test_deny_cn_ejects_cn_alone_within_50_ms_while_the_others_media_keeps_flowing(
    served: ServedGate, operator: VideoRoom, http: aiohttp.ClientSession, clock: ScheduledClock
) -> None:
    room = await operator.create_room(3001, secret=ROOM_SECRET, publishers=8)
    meters = {cc: ReceiveMeter(clock=clock) for cc in COUNTRIES}
    async with contextlib.AsyncExitStack() as stack:
        clients: dict[str, GateClient] = {
            cc: await stack.enter_async_context(gate_client(served.api_url, address(cc, 7)))
            for cc in COUNTRIES
        }
        pcs = await stack.enter_async_context(peer_connections())
        began = time.monotonic()
        with use_policy(POLICY):
            joined = await asyncio.gather(
                *(
                    clients[cc].rooms.publish(room, camera_and_microphone(pcs), display=cc.lower())
                    for cc in COUNTRIES
                )
            )
            publishers = dict(zip(COUNTRIES, joined, strict=True))
            print(f"\npublishing after {time.monotonic() - began:.1f} s")
            watching = [(r, p) for r in STAYERS for p in COUNTRIES if p != r] + [("CN", "US")]
            await asyncio.gather(
                *(
                    clients[r].rooms.subscribe(
                        room, (publishers[p].participant_id,), receiving(pcs, meters[r], p)
                    )
                    for r, p in watching
                )
            )

        def flowing() -> str | None:
            low = {
                (receiver, publisher): counts
                for receiver in STAYERS
                for publisher in COUNTRIES
                if publisher != receiver
                and min((counts := packets(meters[receiver], publisher)).values(), default=0) < 20
            }
            return f"too few packets yet: {low}" if low else None

        print(f"\n{len(pcs)} peer connections set up in {time.monotonic() - began:.1f} s")
        await eventually(flowing, within=WITHIN)
        print(f"media flowing after {time.monotonic() - began:.1f} s")

        # The operator sees each participant's address, country and (from the event handler) media address.
        async def media_known() -> str | None:
            async with http.get(f"{served.admin_url}/api/rooms/{room}/participants", headers=AUTH) as answer:
                listed = (await answer.json())["participants"]
            publishing = {p["name"]: p for p in listed if p["name"]}
            if sorted(publishing) != ["cn", "de", "hk", "us"]:
                return f"named participants: {sorted(publishing)}"
            unknown = [name for name, p in publishing.items() if p["media"] is None]
            for name, p in publishing.items():
                assert (p["address"], p["country"]) == (address(name.upper(), 7), name.upper())
            return f"no media address yet for {unknown}" if unknown else None

        await eventually(media_known, within=WITHIN)

        stayer_meters = {
            (receiver, track.source, track.kind): track
            for receiver in STAYERS
            for track in meters[receiver].tracks
        }
        start = clock()

        def seconds_since(t: float, seconds: float, *, but: str = "") -> Callable[[], str | None]:
            def check() -> str | None:
                late = [
                    k
                    for k, m in stayer_meters.items()
                    if k[1] != but and m.frames_in(t) < seconds / INTERVALS[k[2]]
                ]
                return f"not yet {seconds} s of frames: {late}" if late else None

            return check

        await eventually(seconds_since(start, 1), within=WITHIN)
        body = await put_policy(http, served, room, {"mode": "deny", "countries": ["CN"]})
        answered = time.monotonic()
        cn_handles = {publishers["CN"].handle.handle_id}
        assert sorted((e["outcome"], e["country"]) for e in body["ejections"]) == [("requested", "CN")] * 2

        # Janus detaches CN's handles: the first "detached" within 50 ms of the API's answer.
        cn = publishers["CN"].handle
        seen = [await cn.next_event(within=WITHIN)]
        while seen[-1].get("janus") != "detached":
            seen.append(await cn.next_event(within=WITHIN))
        took = time.monotonic() - answered
        detached = seen[-1]
        print(f"\nCN's publisher detached by Janus {took * 1000:.1f} ms after the API answered")
        assert detached["sender"] in cn_handles
        assert took <= EJECTED_WITHIN_S, f"ejected {took * 1000:.1f} ms after the API answered"

        # CN alone was told why, on its own session, before Janus's detach reached it.
        told = [e for e in seen if "geofence" in _data(e)]
        assert [_data(e)["geofence"]["message"] for e in told] == [
            "You were removed: this meeting is no longer accessible from China (CN)."
        ]
        for stayer in STAYERS:
            for handle in clients[stayer].session.handles.values():
                assert not [e for e in _drained(handle.events) if "geofence" in _data(e)]

        await eventually(seconds_since(clock(), 2, but="CN"), within=WITHIN)
        end = clock()
        gaps = {key: m.gap_stats(start, end) for key, m in stayer_meters.items() if key[1] != "CN"}
        print("max gap around the ejection (ms):")
        for (receiver, publisher, kind), stats in sorted(gaps.items()):
            figures = f"max {stats.max_ms:.1f} p99 {stats.p99_ms:.1f} n={stats.count}"
            print(f"  {publisher}->{receiver} {kind}: {figures}")
        assert len(gaps) == 12  # three stayers, each receiving the other two's audio and video
        for (receiver, publisher, kind), stats in gaps.items():
            assert stats.complete, (receiver, publisher, kind, stats)
            assert stats.count >= 3 / INTERVALS[kind] - 1, (receiver, publisher, kind, stats)
            assert stats.max_ms <= 3 * INTERVALS[kind] * 1000, (receiver, publisher, kind, stats)

        async def cn_gone_from_janus() -> str | None:
            displays = sorted(p["display"] for p in await operator.participants(room))
            return None if displays == ["de", "hk", "us"] else f"Janus lists {displays}"

        await eventually(cn_gone_from_janus, within=WITHIN)
        assert {p.participant for p in served.gate.geofence.participants(str(room))} == {
            m.participant for m in served.gate.members.values()
        }
        assert not [m for m in served.gate.members.values() if m.session == clients["CN"].session.session_id]

        # CN's rejoin, on a new handle of the same session, is refused naming the country.
        again = await clients["CN"].session.attach(PLUGIN)
        with pytest.raises(JanusError) as refused:
            await again.message({"request": "join", "ptype": "publisher", "room": room, "display": "cn"})
        assert (refused.value.code, refused.value.reason) == (
            403,
            "This meeting is not accessible from China (CN).",
        )


def _data(event: JsonObject) -> JsonObject:
    data: JsonObject = event.get("plugindata", {}).get("data", {})
    return data


def _drained(queue: asyncio.Queue[JsonObject]) -> list[JsonObject]:
    events: list[JsonObject] = []
    while not queue.empty():
        events.append(queue.get_nowait())
    return events
