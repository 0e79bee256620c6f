"""Enforcement end to end: real aiortc peers from US, DE, HK and CN, policies applied live over the
operator API, and everyone else's media keeps flowing.

The test database puts 127.1/16 in US, 127.49/16 in DE, 127.85/16 in HK and 127.86/16 in CN; each
peer's WebSocket and ICE are bound to an address of its country, so the server really sees it there.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from sfu_geofence.core.audit import EventKind
from sfu_geofence.core.geofence import Geofence
from sfu_geofence.core.policy import Enforcement, RelayedRule, RoomPolicy
from sfu_geofence.protocol import (
    ClosingMessage,
    EjectedMessage,
    Join,
    ParticipantLeft,
    RefusedMessage,
    encode,
)
from sfu_geofence.rtc.ice import SelectedPair
from sfu_geofence.server import GEOFENCE_HOST, ServerConfig
from sfu_geofence.server.admin import AdminConfig
from sfu_geofence.server.enforcement import refusal_reason
from sfu_geofence.server.remote import ProxyConfig
from sfu_geofence.sfu import CloseReason, Refused
from sfu_geofence.synthetic.client import (
    AUDIO_INTERVAL,
    VIDEO_INTERVAL,
    SyntheticPeer,
    everyone_receives,
    synthetic_tracks,
)
from sfu_geofence.synthetic.meter import TrackMeter
from sfu_geofence.testing.channel import RecordingChannel
from sfu_geofence.testing.clock import ScheduledClock
from sfu_geofence.testing.server import Served, geofenced_on_loopback
from sfu_geofence.testing.testdb import build_database
from sfu_geofence.testing.wait import eventually

TOKEN = "enforcement-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NETWORKS = {"US": "127.1.0.0/16", "DE": "127.49.0.0/16", "HK": "127.85.0.0/16", "CN": "127.86.0.0/16"}
WITHIN = 30.0  # a loaded 2-core machine
INTERVALS = {"audio": float(AUDIO_INTERVAL), "video": float(VIDEO_INTERVAL)}


def address(country: str, n: int) -> str:
    a, b = NETWORKS[country].split(".")[:2]
    return f"{a}.{b}.0.{n}"


@pytest.fixture
def database(tmp_path: Path) -> Path:
    return build_database(tmp_path / "countries.mmdb", [f"{net}={cc}" for cc, net in NETWORKS.items()])


@pytest.fixture
def config(database: Path) -> ServerConfig:
    return ServerConfig(db_path=str(database), admin=AdminConfig(TOKEN))


@pytest.fixture
def clock() -> Iterator[ScheduledClock]:
    scheduled = ScheduledClock()
    yield scheduled
    scheduled.close()


@pytest.fixture
async def served(config: ServerConfig) -> AsyncIterator[Served]:
    async with geofenced_on_loopback(config) as server:
        yield server


@pytest.fixture
async def api(served: Served) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession() as session:
        assert served.admin_base is not None
        yield Api(session, served.admin_base + "/api")


@dataclass
class Api:
    """The operator API over real HTTP."""

    session: aiohttp.ClientSession
    url: str

    async def call(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        async with self.session.request(
            method, self.url + path, json=body, headers=AUTH if headers is None else headers
        ) as response:
            return response.status, await response.json()

    async def put_policy(self, room: str, policy: dict[str, Any]) -> dict[str, Any]:
        status, body = await self.call("PUT", f"/rooms/{room}/policy", policy)
        assert status == 200, body
        return dict(body)


def meters_between(peers: Sequence[SyntheticPeer]) -> dict[tuple[str, str, str], TrackMeter]:
    """What each peer receives from each other one: (receiver, publisher, kind) -> its meter."""
    names = {p.participant_id: p.name for p in peers}
    return {
        (peer.name, names[received.participant], received.kind): received.meter
        for peer in peers
        for received in peer.received.values()
        if received.participant in names
    }


@asynccontextmanager
async def peers_in(
    served: Served,
    room: str,
    countries: Sequence[str],
    *,
    media: bool = True,
    clock: Callable[[], float] = time.monotonic,
) -> AsyncIterator[dict[str, SyntheticPeer]]:
    """One peer per country (named after it), joined, and with media receiving every other's.

    Received frames are timed with ``clock``.
    """
    peers = {
        cc: SyntheticPeer(
            served.url,
            room,
            address(cc, 1),
            name=cc.lower(),
            tracks=synthetic_tracks() if media else [],
            clock=clock,
        )
        for cc in countries
    }
    try:
        for peer in peers.values():
            await peer.join(within=WITHIN)
            assert peer.participant_id is not None, peer.messages
        if media:
            await eventually(lambda: everyone_receives(list(peers.values())), within=WITHIN)
        yield peers
    finally:
        for peer in peers.values():
            await peer.close()


async def refused_join(served: Served, room: str, addr: str) -> SyntheticPeer:
    peer = SyntheticPeer(served.url, room, addr, name="again")
    await peer.join(within=WITHIN)
    await asyncio.wait_for(peer.closed.wait(), WITHIN)
    await peer.close()
    return peer


async def gone(served: Served, peer: SyntheticPeer) -> None:
    await asyncio.wait_for(peer.closed.wait(), WITHIN)
    pid = str(peer.participant_id)
    await eventually(
        lambda: None if pid not in served.sfu.participants else f"{pid} still served", within=WITHIN
    )


POLICIES = {
    "deny CN": {"mode": "deny", "countries": ["CN"]},
    "allow US, DE, HK": {"mode": "allow", "countries": ["US", "DE", "HK"]},
}


@pytest.mark.slow
@pytest.mark.usefixtures("frozen_heap")
@pytest.mark.parametrize("policy", list(POLICIES), ids=list(POLICIES))
async def test_a_policy_applied_live_ejects_cn_alone_while_everyone_elses_media_keeps_flowing(
    served: Served, api: Api, policy: str, clock: ScheduledClock
) -> None:
    # Gaps in scheduled time: a frame that arrived while this process waited for a CPU (the machine is
    # shared) is not counted late; a frame the SFU did not deliver still is.
    async with peers_in(served, "meeting", ["US", "DE", "HK", "CN"], clock=clock) as peers:
        cn, stayers = peers["CN"], [peers["US"], peers["DE"], peers["HK"]]
        cn_in_sfu = served.sfu.participants[str(cn.participant_id)]
        meters = meters_between(stayers)
        start = clock()

        def seconds_since(t: float, seconds: float) -> Callable[[], str | None]:
            def check() -> str | None:
                late = [k for k, m in meters.items() if m.frames_in(t) < seconds / INTERVALS[k[2]]]
                return f"not yet {seconds} s of frames: {late}" if late else None

            return check

        await eventually(seconds_since(start, 1), within=WITHIN)  # the window opens 1 s before
        body = await api.put_policy("meeting", POLICIES[policy])
        assert [(e["participant"], e["outcome"], e["country"]) for e in body["ejections"]] == [
            (cn.participant_id, "requested", "CN")
        ]

        await gone(served, cn)
        assert cn.close_code == 4409
        assert (
            cn.messages[-1]
            == EjectedMessage(
                "You were removed: this meeting is no longer accessible from China (CN)."
            ).to_message()
        )
        # The others hear only that it left, and their streams run on for two more seconds.
        left = ParticipantLeft(str(cn.participant_id), "cn").to_message()
        await eventually(
            lambda: None if all(left in p.messages for p in stayers) else "participant-left missing",
            within=WITHIN,
        )
        await eventually(seconds_since(clock(), 2), within=WITHIN)  # and closes 2 s after
        end = clock()
        stats = {key: m.gap_stats(start, end) for key, m in meters.items()}
        print(f"\n{policy}: max gap around the ejection (ms), window {end - start:.1f} s:")
        for (receiver, publisher, kind), gaps in sorted(stats.items()):
            figures = f"max {gaps.max_ms:.1f} p99 {gaps.p99_ms:.1f} n={gaps.count}"
            print(f"  {publisher}->{receiver} {kind}: {figures}")
        assert len(stats) == 12  # three stayers, each receiving the other two's audio and video
        for (receiver, publisher, kind), gaps in stats.items():
            assert gaps.complete, (receiver, publisher, kind, gaps)
            assert gaps.count >= 3 / INTERVALS[kind] - 1, (receiver, publisher, kind, gaps)
            assert gaps.max_ms <= 3 * INTERVALS[kind] * 1000, (receiver, publisher, kind, gaps)

        # HK is not CN: untouched, still connected and receiving.
        assert not peers["HK"].closed.is_set()
        assert str(peers["HK"].participant_id) in served.sfu.participants
        # Its connection is closed, its producers too, and with them every stayer's consumers of them.
        await eventually(
            lambda: None if cn_in_sfu.pc.connectionState == "closed" else "connection still open",
            within=WITHIN,
        )
        assert all(producer.closed for producer in cn_in_sfu.producers.values())
        for stayer in stayers:
            consumers = served.sfu.participants[str(stayer.participant_id)].consumers
            assert {c.producer.participant_id for c in consumers.values()} == {
                s.participant_id for s in stayers if s is not stayer
            }
        # The ejected participant's tracks are gone from every stayer's m-lines.
        for stayer in stayers:
            assert cn.participant_id not in {t.participant for t in stayer.live_tracks()}

        again = await refused_join(served, "meeting", address("CN", 1))
        assert again.close_code == 4403
        assert again.messages == [
            RefusedMessage("This meeting is not accessible from China (CN).").to_message()
        ]
        assert len(served.sfu.rooms["meeting"].participants) == 3

        status, audit = await api.call("GET", "/audit?room=meeting&kind=ejection")
        assert status == 200
        assert [(e["participant"], e["outcome"], e["country"]) for e in audit["events"]] == [
            (cn.participant_id, "requested", "CN"),
            (cn.participant_id, "completed", "CN"),
        ]


async def test_monitor_mode_ejects_and_refuses_nobody_and_audits_who_would_be(
    served: Served, api: Api
) -> None:
    async with peers_in(served, "watched", ["US", "HK", "CN"], media=False) as peers:
        body = await api.put_policy(
            "watched", {"mode": "deny", "countries": ["CN"], "enforcement": "monitor"}
        )
        assert [(e["participant"], e["outcome"]) for e in body["ejections"]] == [
            (peers["CN"].participant_id, "would_eject")
        ]
        late = SyntheticPeer(served.url, "watched", address("CN", 2), name="late")
        await late.join(within=WITHIN)
        try:
            assert late.participant_id is not None
            await asyncio.sleep(0.5)  # an ejection, if one were (wrongly) scheduled, would have happened
            assert not any(p.closed.is_set() for p in peers.values())
            assert len(served.sfu.rooms["watched"].participants) == 4
            status, audit = await api.call("GET", "/audit?room=watched")
            assert status == 200
            outcomes = [(e["kind"], e["outcome"], e["country"]) for e in audit["events"]]
            assert ("ejection", "would_eject", "CN") in outcomes
            assert ("admission", "would_refuse", "CN") in outcomes
            assert not [o for o in outcomes if o[1] in ("requested", "completed", "refused")]
        finally:
            await late.close()


async def test_the_operator_api_refuses_missing_and_wrong_tokens_and_changes_nothing(
    served: Served, api: Api
) -> None:
    async with peers_in(served, "guarded", ["US", "CN"], media=False) as peers:
        deny = {"mode": "deny", "countries": ["CN"]}
        status, body = await api.call("PUT", "/rooms/guarded/policy", deny, headers={})
        assert (status, body["error"]) == (401, "unauthorised")
        wrong = {"Authorization": "Bearer " + "x" * len(TOKEN)}
        status, body = await api.call("PUT", "/rooms/guarded/policy", deny, headers=wrong)
        assert (status, body["error"]) == (403, "forbidden")
        for path in ("/rooms/guarded/participants", "/audit", "/policy/default"):
            assert (await api.call("GET", path, headers={}))[0] == 401
            assert (await api.call("GET", path, headers=wrong))[0] == 403
        await asyncio.sleep(0.3)
        assert not peers["CN"].closed.is_set()
        status, body = await api.call("GET", "/rooms/guarded/policy")
        assert (status, body["inherited"]) == (200, True)
        # With the token: the participants, where the geofence places them and how.
        status, body = await api.call("GET", "/rooms/guarded/participants")
        assert status == 200
        assert {(p["name"], p["address"], p["country"], p["source"]) for p in body["participants"]} == {
            ("us", address("US", 1), "US", "country_code"),
            ("cn", address("CN", 1), "CN", "country_code"),
        }


async def test_without_a_token_the_operator_api_is_not_mounted(database: Path) -> None:
    async with (
        geofenced_on_loopback(ServerConfig(db_path=str(database))) as served,
        aiohttp.ClientSession() as session,
        session.get(f"{served.admin_base}/api/rooms", headers=AUTH) as response,
    ):
        assert response.status == 404


async def test_an_operator_ejects_one_participant_by_hand(served: Served, api: Api) -> None:
    async with peers_in(served, "manual", ["US", "DE"], media=False) as peers:
        status, body = await api.call(
            "POST", f"/rooms/manual/participants/{peers['DE'].participant_id}/eject", {"reason": "spam"}
        )
        assert status == 202, body
        await gone(served, peers["DE"])
        assert peers["DE"].close_code == 4409
        assert (
            peers["DE"].messages[-1]
            == EjectedMessage("An operator removed you from this meeting.").to_message()
        )
        assert not peers["US"].closed.is_set()


async def test_a_database_reload_ejects_who_moved_into_a_restricted_country(
    served: Served, api: Api, tmp_path: Path
) -> None:
    moved = build_database(
        tmp_path / "moved.mmdb", [f"{net}={'CN' if cc == 'DE' else cc}" for cc, net in NETWORKS.items()]
    )
    async with peers_in(served, "moving", ["US", "DE"], media=False) as peers:
        await api.put_policy("moving", {"mode": "deny", "countries": ["CN"]})
        status, body = await api.call("POST", "/database/reload", {"path": str(moved)})
        assert status == 200, body
        await gone(served, peers["DE"])
        assert peers["DE"].close_code == 4409
        assert not peers["US"].closed.is_set()


async def test_media_from_a_restricted_country_ejects_a_participant_whose_signaling_is_elsewhere(
    served: Served, api: Api
) -> None:
    await api.put_policy("split", {"mode": "deny", "countries": ["CN"]})
    async with peers_in(served, "split", ["DE"], media=False) as peers:
        sneaky = SyntheticPeer(
            served.url,
            "split",
            address("US", 7),
            name="sneaky",
            tracks=synthetic_tracks()[:1],
            media_address=address("CN", 7),
        )
        try:
            await sneaky.join(within=WITHIN)
            assert sneaky.participant_id is not None  # its signaling comes from the US
            await gone(served, sneaky)
            assert sneaky.close_code == 4409
            assert (
                sneaky.messages[-1]
                == EjectedMessage(
                    "You were removed: your media comes from China (CN), "
                    "where this meeting is not accessible."
                ).to_message()
            )
            assert not peers["DE"].closed.is_set()
            status, audit = await api.call("GET", f"/audit?participant={sneaky.participant_id}&kind=media")
            assert status == 200
            assert [(e["address"], e["country"], e["outcome"], e["detail"]) for e in audit["events"]] == [
                (address("CN", 7), "CN", "refused", "direct")
            ]
        finally:
            await sneaky.close()


# -- behind a reverse proxy -----------------------------------------------------------------------

PROXY = "127.0.0.2"


async def join_with_headers(served: Served, source: str, headers: dict[str, str]) -> list[dict[str, Any]]:
    """Join ``spoof`` from ``source`` with extra handshake headers; every message until the close."""
    connector = aiohttp.TCPConnector(local_addr=(source, 0))
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.ws_connect(served.url, headers=headers) as ws,
    ):
        await ws.send_str(encode(Join("spoof", publish=frozenset())))
        messages: list[dict[str, Any]] = []
        async for message in ws:
            if message.type is aiohttp.WSMsgType.TEXT:
                messages.append(json.loads(message.data))
                if messages[-1]["type"] == "joined":
                    break
        return messages


@pytest.mark.parametrize(
    ("source", "forwarded", "placed_at", "outcome"),
    [
        pytest.param(
            address("CN", 20), address("US", 20), address("CN", 20), "refused", id="CN client claims US"
        ),
        pytest.param(
            address("US", 21), address("CN", 21), address("US", 21), "admitted", id="US client claims CN"
        ),
        pytest.param(PROXY, address("CN", 22), address("CN", 22), "refused", id="trusted proxy forwards CN"),
        pytest.param(
            PROXY,
            f"{address('US', 23)}, {address('CN', 23)}",
            address("CN", 23),
            "refused",
            id="trusted proxy forwards CN behind a spoofed US entry",
        ),
    ],
)
async def test_x_forwarded_for_is_believed_only_from_a_trusted_proxy(
    config: ServerConfig, source: str, forwarded: str, placed_at: str, outcome: str
) -> None:
    async with geofenced_on_loopback(replace(config, proxies=ProxyConfig((PROXY,)))) as served:
        served.geofence.set_policy("spoof", RoomPolicy.deny("CN"))
        messages = await join_with_headers(served, source, {"X-Forwarded-For": forwarded})
        assert messages[0]["type"] == ("refused" if outcome == "refused" else "joined"), messages
        [event] = served.geofence.audit.events(room="spoof", kind=EventKind.ADMISSION)
        assert (event.address, event.outcome) == (placed_at, outcome)


# -- relayed media: a pair from a declared TURN relay, handed to the host -------------------------


@pytest.mark.parametrize(
    ("rule", "ejected"),
    [(RelayedRule.SIGNALING_COUNTRY, False), (RelayedRule.ADMIT, False), (RelayedRule.REFUSE, True)],
)
async def test_media_relayed_through_turn_follows_the_rooms_relayed_rule(
    served: Served, rule: RelayedRule, ejected: bool
) -> None:
    host = served.app[GEOFENCE_HOST]
    served.geofence.set_policy("relay", RoomPolicy.deny("CN", relayed=rule))
    channel = RecordingChannel()
    participant = served.sfu.join("relay", "de", address("DE", 30), channel, publish=())
    relay = SelectedPair(("127.0.0.1", 5000), (address("CN", 30), 3478), "relay", relayed=True)
    host.selected_pair_changed(participant, relay)
    [event] = served.geofence.audit.events(participant=participant.id, kind=EventKind.MEDIA)
    assert (event.address, event.detail) == (address("CN", 30), "relayed (TURN)")
    await asyncio.sleep(0.1)  # the ejection, if any, is scheduled
    if ejected:
        assert channel.ended == [
            (
                CloseReason.EJECTED,
                "You were removed: this meeting no longer accepts media relayed through a TURN server.",
            )
        ]
        assert participant.id not in served.sfu.participants
    else:
        assert channel.ended == []
        assert participant.id in served.sfu.participants


async def test_a_full_room_refuses_before_the_geofence_registers_anyone(database: Path) -> None:
    config = ServerConfig(db_path=str(database), max_participants_per_room=1)
    async with geofenced_on_loopback(config) as served:
        served.sfu.join("small", "us", address("US", 40), RecordingChannel(), publish=())
        with pytest.raises(Refused) as refused:
            served.sfu.join("small", "de", address("DE", 40), RecordingChannel(), publish=())
        assert not refused.value.by_policy
        assert [p.address for p in served.geofence.participants("small")] == [address("US", 40)]


async def test_an_unknown_country_refused_by_the_room_is_told_so(served: Served) -> None:
    served.geofence.set_policy("strict", RoomPolicy.allow("US", unknown="refuse"))
    peer = await refused_join(served, "strict", "127.99.0.1")
    assert peer.close_code == 4403
    assert peer.messages == [
        RefusedMessage(
            "This meeting is not accessible from an unknown location (your country could not be determined)."
        ).to_message()
    ]


async def test_a_geofence_that_cannot_decide_is_an_internal_error_not_a_refusal_by_policy(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    served.geofence.close()  # as while the server shuts down: the geofence cannot decide any more
    peer = await refused_join(served, "any", address("US", 41))
    assert peer.close_code == 4500  # not 4403: nobody's country was refused
    # Generic: nothing about the geofence, and no "refused" (nobody was).
    assert peer.messages == [ClosingMessage("internal-error", "internal error").to_message()]
    assert "admission of" in caplog.text
    assert "the geofence is closed" in caplog.text
    assert "Traceback" not in caplog.text  # an expected fault, logged once at error level, not a crash
    assert served.sfu.rooms == {}  # nothing allocated


def test_a_refused_participant_reads_its_country_by_its_common_name(tmp_path: Path) -> None:
    database = build_database(tmp_path / "tw.mmdb", ["127.88.0.0/16=TW", "127.86.0.0/16=CN"])
    fence = Geofence(lambda request: None, database=database)
    fence.set_policy("r", RoomPolicy.deny("TW", "CN"))
    texts = [refusal_reason(fence.decide("r", a)) for a in ("127.88.0.1", "127.86.0.1")]
    assert texts == [
        "This meeting is not accessible from Taiwan (TW).",
        "This meeting is not accessible from China (CN).",
    ]
    fence.close()


def test_monitor_enforcement_is_the_policy_value_the_api_sends() -> None:
    # The API's JSON and the core's enum agree on the word (guards the monitor test above).
    assert RoomPolicy.from_dict(
        {"mode": "deny", "countries": ["CN"], "enforcement": "monitor"}
    ).enforcement is (Enforcement.MONITOR)


async def test_a_selected_pair_that_changes_to_a_restricted_country_ejects_then(served: Served) -> None:
    host = served.app[GEOFENCE_HOST]
    served.geofence.set_policy("moving-media", RoomPolicy.deny("CN"))
    channel = RecordingChannel()
    participant = served.sfu.join("moving-media", "de", address("DE", 31), channel, publish=())
    host.selected_pair_changed(
        participant, SelectedPair(("127.0.0.1", 5000), (address("DE", 31), 4000), "host")
    )
    await asyncio.sleep(0.1)
    assert channel.ended == []
    host.selected_pair_changed(
        participant, SelectedPair(("127.0.0.1", 5000), (address("CN", 31), 4001), "prflx")
    )
    await eventually(lambda: None if channel.ended else "not ejected", within=WITHIN)
    assert channel.ended == [
        (
            CloseReason.EJECTED,
            "You were removed: your media comes from China (CN), where this meeting is not accessible.",
        )
    ]
    events = served.geofence.audit.events(participant=participant.id, kind=EventKind.MEDIA)
    assert [(e.address, e.outcome) for e in events] == [
        (address("DE", 31), "admitted"),
        (address("CN", 31), "refused"),
    ]


async def test_a_participant_admitted_but_never_allocated_leaves_no_session_and_no_room(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(*args: object) -> None:  # fault injection: allocation fails after admission
        raise RuntimeError("allocation failed")

    monkeypatch.setattr(served.sfu, "_allocate", fail)
    peer = await refused_join(served, "broken", address("US", 42))
    assert peer.close_code == 4500
    assert served.sfu.rooms == {}
    assert served.geofence.participants("broken") == []  # the admitted session was left
