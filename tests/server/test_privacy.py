"""No participant ever learns another participant's address or country.

Every text frame the server sends to every participant is kept (offers included) across joins, media,
an ejection, a refusal and a leave; none may carry another participant's address, or another's
country as a code or a name. A participant's own refusal or ejection names its own country only, and
the SDP offers carry the SFU's own ICE candidates only.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sfu_geofence.core.countries import country_name
from sfu_geofence.core.policy import RoomPolicy
from sfu_geofence.protocol import EjectedMessage, RefusedMessage
from sfu_geofence.server import ServerConfig
from sfu_geofence.synthetic.client import SyntheticPeer, synthetic_tracks
from sfu_geofence.testing.server import Served, geofenced_on_loopback
from sfu_geofence.testing.testdb import build_database
from sfu_geofence.testing.wait import eventually

WITHIN = 30.0
SFU_ICE = "127.0.0.1"


@dataclass
class Someone:
    name: str
    country: str
    address: str
    peer: SyntheticPeer | None = None


PEOPLE = [
    Someone("alice", "US", "127.1.0.50"),
    Someone("bob", "DE", "127.49.0.50"),
    Someone("carol", "HK", "127.85.0.50"),
    Someone("dave", "CN", "127.86.0.50"),
    Someone("erin", "CN", "127.86.0.51"),  # refused
    Someone("frank", "US", "127.1.0.51"),  # joins late
]


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    database = build_database(
        tmp_path / "db.mmdb",
        ["127.1.0.0/16=US", "127.49.0.0/16=DE", "127.85.0.0/16=HK", "127.86.0.0/16=CN"],
    )
    async with geofenced_on_loopback(ServerConfig(db_path=str(database))) as server:
        yield server


def join(served: Served, someone: Someone) -> SyntheticPeer:
    someone.peer = SyntheticPeer(
        served.url, "private", someone.address, name=someone.name, tracks=synthetic_tracks()[:1]
    )
    return someone.peer


def hears_everyone(peers: list[SyntheticPeer]) -> str | None:
    for peer in peers:
        heard = {r.participant for r in peer.received.values() if r.meter.frames > 5}
        missing = {p.participant_id for p in peers if p is not peer} - heard
        if missing:
            return f"{peer.name} does not receive audio from {missing} yet"
    return None


@pytest.mark.slow
async def test_no_message_to_a_participant_carries_another_participants_address_or_country(
    served: Served,
) -> None:
    alice, bob, carol, dave, erin, frank = PEOPLE
    try:
        for someone in (alice, bob, carol, dave):
            await join(served, someone).join(within=WITHIN)
        first = [s.peer for s in (alice, bob, carol, dave) if s.peer is not None]
        await eventually(lambda: hears_everyone(first), within=WITHIN)

        served.geofence.set_policy("private", RoomPolicy.deny("CN"))  # dave is ejected
        assert dave.peer is not None
        await eventually(
            lambda: None if dave.peer and dave.peer.closed.is_set() else "dave still in", within=WITHIN
        )
        refused = join(served, erin)
        await refused.join(within=WITHIN)
        await eventually(lambda: None if refused.closed.is_set() else "erin not refused", within=WITHIN)
        assert bob.peer is not None
        await bob.peer.leave()
        late = join(served, frank)
        await late.join(within=WITHIN)
        stayers = [s.peer for s in (alice, carol, frank) if s.peer is not None]
        await eventually(lambda: hears_everyone(stayers), within=WITHIN)
    finally:
        for someone in PEOPLE:
            if someone.peer is not None:
                await someone.peer.close()

    assert dave.peer.close_code == 4409
    assert erin.peer is not None
    assert erin.peer.close_code == 4403
    for someone in PEOPLE:
        peer = someone.peer
        assert peer is not None
        assert peer.transcript, f"{someone.name} received nothing"
        others = [o for o in PEOPLE if o is not someone]
        forbidden_codes = {o.country for o in others} - {someone.country}
        forbidden = {o.address for o in others} | forbidden_codes | {country_name(c) for c in forbidden_codes}
        offers = 0
        for frame in peer.transcript:
            message = json.loads(frame)
            sdp = message.pop("sdp", "")
            text = json.dumps(message)
            words = set(re.findall(r"[A-Za-z0-9.]+", text)) | {
                country_name(c) for c in forbidden_codes if country_name(c) in text
            }
            leaked = forbidden & words
            assert not leaked, f"{someone.name} was sent {leaked}: {text}"
            if message["type"] == "offer":
                offers += 1
                assert not {o.address for o in PEOPLE} & set(re.findall(r"\d+\.\d+\.\d+\.\d+", sdp)) - {
                    SFU_ICE
                }
                candidates = re.findall(r"^a=candidate:\S+ \d+ \S+ \d+ (\S+) \d+ typ (\S+)", sdp, re.M)
                assert candidates
                assert {address for address, _ in candidates} == {SFU_ICE}, candidates
                assert set(re.findall(r"^c=IN IP4 (\S+)", sdp, re.M)) <= {SFU_ICE, "0.0.0.0"}
        if someone is not erin:
            assert offers >= 1, f"{someone.name} got no offer"

    # What each one is told about itself: its own country, and only in its own refusal or ejection.
    assert (
        dave.peer.messages[-1]
        == EjectedMessage(
            "You were removed: this meeting is no longer accessible from China (CN)."
        ).to_message()
    )
    assert erin.peer.messages == [
        RefusedMessage("This meeting is not accessible from China (CN).").to_message()
    ]
    # The others were told only that dave and bob left.
    assert alice.peer is not None
    assert [
        (m["type"], m.get("name")) for m in alice.peer.messages if m["type"].startswith("participant-")
    ] == [
        ("participant-joined", "bob"),
        ("participant-joined", "carol"),
        ("participant-joined", "dave"),
        ("participant-left", "dave"),
        ("participant-left", "bob"),
        ("participant-joined", "frank"),
    ]
