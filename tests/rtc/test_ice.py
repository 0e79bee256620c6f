"""ICE on configured loopback addresses only, for real aiortc peer connections."""

from __future__ import annotations

import asyncio
import ipaddress
import re

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from sfu_geofence.rtc.ice import IcePolicy, SelectedPair, observe_selected_pair, selected_pair, use_policy
from sfu_geofence.testing.sdp import relabel_as_relay
from sfu_geofence.testing.wait import eventually


def _connection(pc: RTCPeerConnection):  # type: ignore[no-untyped-def]
    """The aioice connection behind the first transceiver (test introspection only)."""
    return pc.sctp.transport.transport.iceGatherer._connection


async def _offer_answer(
    offerer_policy: IcePolicy,
    answerer_policy: IcePolicy,
    munge_offer: object = None,
    munge_answer: object = None,
) -> tuple[RTCPeerConnection, RTCPeerConnection]:
    with use_policy(offerer_policy):
        offerer = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        offerer.createDataChannel("probe")
        await offerer.setLocalDescription(await offerer.createOffer())
    sdp = offerer.localDescription.sdp
    if callable(munge_offer):
        sdp = munge_offer(sdp)
    with use_policy(answerer_policy):
        answerer = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        await answerer.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        await answerer.setLocalDescription(await answerer.createAnswer())
    answer = answerer.localDescription.sdp
    if callable(munge_answer):
        answer = munge_answer(answer)
    await offerer.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    return offerer, answerer


async def _wait_connected(*pcs: RTCPeerConnection) -> None:
    def check() -> str | None:
        states = [pc.connectionState for pc in pcs]
        return None if set(states) == {"connected"} else f"connection states {states}"

    await eventually(check, within=10)


def _candidate_hosts(sdp: str) -> set[str]:
    return {m.group(1) for m in re.finditer(r"a=candidate:\S+ \d+ \S+ \d+ (\S+) \d+ typ", sdp)}


async def test_each_peer_gathers_only_its_own_loopback_address() -> None:
    sfu = IcePolicy(bind=("127.0.0.1",))
    peer = IcePolicy(bind=("127.86.0.5",))
    offerer, answerer = await _offer_answer(peer, sfu)
    try:
        assert _candidate_hosts(offerer.localDescription.sdp) == {"127.86.0.5"}
        assert _candidate_hosts(answerer.localDescription.sdp) == {"127.0.0.1"}
        await _wait_connected(offerer, answerer)
        nominated = _connection(answerer)._nominated[1]
        assert nominated.remote_addr[0] == "127.86.0.5"
        assert nominated.local_candidate.host == "127.0.0.1"
    finally:
        await offerer.close()
        await answerer.close()


async def test_non_loopback_and_mdns_candidates_are_ignored_never_contacted() -> None:
    # If either injected candidate were used, aioice would send checks to it (the session's
    # loopback guard would fail the run) or multicast an mDNS query to 224.0.0.251.
    def add_bad_candidates(sdp: str) -> str:
        extra = (
            "a=candidate:1 1 udp 2130706431 192.0.2.2 9999 typ host\r\n"
            "a=candidate:2 1 udp 2130706430 3f2b2a57-0d5d-4b3c-9a0a-1a2b3c4d5e6f.local 9998 typ host\r\n"
        )
        return sdp.replace("a=end-of-candidates", f"{extra}a=end-of-candidates", 1)

    offerer, answerer = await _offer_answer(
        IcePolicy(bind=("127.49.0.7",)), IcePolicy(bind=("127.0.0.1",)), add_bad_candidates
    )
    try:
        await _wait_connected(offerer, answerer)
        remote_hosts = {c.host for c in _connection(answerer).remote_candidates}
        assert remote_hosts == {"127.49.0.7"}
    finally:
        await offerer.close()
        await answerer.close()


def _strip_candidates(sdp: str) -> str:
    """Remove every candidate and end-of-candidates, so the answerer can only learn peer-reflexive ones."""
    dropped = ("a=candidate:", "a=end-of-candidates")
    kept = (line for line in sdp.split("\r\n") if line and not line.startswith(dropped))
    return "".join(line + "\r\n" for line in kept)


async def test_peer_reflexive_source_inside_allowed_range_is_learned() -> None:
    offerer, answerer = await _offer_answer(
        IcePolicy(bind=("127.85.0.9",)), IcePolicy(bind=("127.0.0.1",)), _strip_candidates
    )
    try:
        await _wait_connected(offerer, answerer)
        learned = [c for c in _connection(answerer).remote_candidates if c.type == "prflx"]
        assert [c.host for c in learned] == ["127.85.0.9"]
    finally:
        await offerer.close()
        await answerer.close()


async def test_peer_reflexive_source_outside_allowed_range_gets_no_reply() -> None:
    narrow = IcePolicy(bind=("127.0.0.1",), allowed_remote=(ipaddress.ip_network("127.0.0.0/16"),))
    offerer, answerer = await _offer_answer(IcePolicy(bind=("127.85.0.9",)), narrow, _strip_candidates)
    try:
        await asyncio.sleep(2.0)  # several check rounds on loopback
        assert answerer.connectionState != "connected"
        assert _connection(answerer).remote_candidates == []
    finally:
        await offerer.close()
        await answerer.close()


def test_policy_rejects_a_bind_address_that_is_not_an_ip() -> None:
    with pytest.raises(ValueError, match="localhost"):
        IcePolicy(bind=("localhost",))


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("127.0.0.1", True),
        ("::1", True),
        ("::ffff:127.3.2.1", True),
        ("192.0.2.2", False),
        ("abc.local", False),
        ("fe80::1%eth0", False),
    ],
)
def test_allows_remote(host: str, allowed: bool) -> None:
    assert IcePolicy().allows_remote(host) is allowed


async def test_the_selected_pair_is_reported_when_nominated_and_to_observers_added_later() -> None:
    offerer, answerer = await _offer_answer(IcePolicy(bind=("127.86.0.6",)), IcePolicy(bind=("127.0.0.1",)))
    try:
        early: list[SelectedPair] = []
        observe_selected_pair(_connection(offerer), early.append)
        await _wait_connected(offerer, answerer)
        late: list[SelectedPair] = []
        observe_selected_pair(_connection(offerer), late.append)
        assert len(early) == 1
        assert late == early
        pair = early[0]
        assert pair.local_address[0] == "127.86.0.6"
        assert pair.remote_address[0] == "127.0.0.1"
        assert (pair.remote_type, pair.relayed) == ("host", False)
        assert selected_pair(_connection(offerer)) == pair
    finally:
        await offerer.close()
        await answerer.close()


@pytest.mark.parametrize(
    ("relay_networks", "relayed"),
    [
        ((), False),
        ((ipaddress.ip_network("127.0.0.0/24"),), False),
        ((ipaddress.ip_network("127.86.0.0/24"),), True),
        ((ipaddress.ip_network("::ffff:127.86.0.0/120"),), True),
    ],
    ids=[
        "no relay declared",
        "another relay declared",
        "its address is a declared relay",
        "its address is a relay declared IPv4-mapped",
    ],
)
async def test_a_pair_is_relayed_only_when_its_remote_address_is_a_declared_relay_whatever_its_type(
    relay_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...], relayed: bool
) -> None:
    # The peer at 127.86.0.7 labels its host candidate "typ relay": the label alone decides nothing.
    judge = IcePolicy(bind=("127.0.0.1",), relay_networks=relay_networks)
    offerer, answerer = await _offer_answer(
        judge, IcePolicy(bind=("127.86.0.7",)), munge_answer=relabel_as_relay
    )
    try:
        await _wait_connected(offerer, answerer)
        pair = selected_pair(_connection(offerer))
        assert pair is not None
        assert (pair.remote_address[0], pair.remote_type, pair.relayed) == ("127.86.0.7", "relay", relayed)
    finally:
        await offerer.close()
        await answerer.close()


def test_a_declared_relay_is_an_allowed_remote_and_names_are_never_relays() -> None:
    policy = IcePolicy(allowed_remote=(), relay_networks=(ipaddress.ip_network("127.0.0.1/32"),))
    assert (policy.allows_remote("127.0.0.1"), policy.is_relay("127.0.0.1")) == (True, True)
    assert (policy.allows_remote("127.0.0.2"), policy.is_relay("127.0.0.2")) == (False, False)
    assert policy.is_relay("::ffff:127.0.0.1")
    assert not policy.is_relay("relay.local")
