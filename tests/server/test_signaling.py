"""Bad input gets a specific error or close code, never a crash, and nobody else notices."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from sfu_geofence.protocol import (
    Answer,
    ClientMessage,
    ClosingMessage,
    ErrorMessage,
    IceServer,
    Join,
    OfferMessage,
    RefusedMessage,
    encode,
)
from sfu_geofence.server import ServerConfig
from sfu_geofence.server.signaling import close_reason_bytes
from sfu_geofence.sfu import JoinRequest, Refusal
from sfu_geofence.synthetic.client import SyntheticPeer, synthetic_tracks
from sfu_geofence.testing.server import Served, served_on_loopback
from sfu_geofence.testing.wait import eventually


def _message(peer: SyntheticPeer, type_: str) -> Any:
    def check() -> str | None:
        found = [m for m in peer.messages if m["type"] == type_]
        return None if found else f"no {type_!r} message in {peer.messages}"

    return check


async def _errors_after(peer: SyntheticPeer, text: str) -> dict[str, Any]:
    """Send ``text`` and return the error it earns."""
    before = len([m for m in peer.messages if m["type"] == "error"])
    await peer.send_raw(text)

    def check() -> str | None:
        errors = [m for m in peer.messages if m["type"] == "error"]
        return None if len(errors) > before else f"no error reply, messages: {peer.messages}"

    await eventually(check, within=5)
    error: dict[str, Any] = [m for m in peer.messages if m["type"] == "error"][-1]
    return error


@pytest.fixture
async def client(served: Served) -> AsyncIterator[SyntheticPeer]:
    peer = SyntheticPeer(served.url, "room-x", "127.0.40.1", name="client")
    await peer.connect()
    try:
        yield peer
    finally:
        await peer.close()


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("{not json", "malformed-json"),
        ("[1, 2]", "invalid-message"),
        ('{"kind": "join"}', "invalid-message"),
        ('{"type": "subscribe"}', "unknown-type"),
        ('{"type": "join", "room": "a room with spaces"}', "invalid-message"),
        ('{"type": "join", "room": "r", "publish": {"screen": true}}', "invalid-message"),
        ('{"type": "join", "room": "r", "name": 5}', "invalid-message"),
        ('{"type": "answer", "sdp": "v=0"}', "wrong-state"),
        ('{"type": "answer"}', "invalid-message"),
    ],
)
async def test_a_bad_message_gets_a_specific_error_and_the_session_goes_on(
    served: Served, client: SyntheticPeer, text: str, code: str
) -> None:
    error = await _errors_after(client, text)
    assert error["code"] == code
    assert error["message"]
    # The session still works: the client can join.
    await client.join(publish={})
    assert client.participant_id is not None
    assert list(served.sfu.participants) == [client.participant_id]


async def test_joining_twice_is_the_wrong_state(client: SyntheticPeer) -> None:
    await client.join(publish={})
    error = await _errors_after(client, encode(Join("room-x")))
    assert error == ErrorMessage("wrong-state", "already joined").to_message()


async def test_an_oversized_message_closes_with_4413(client: SyntheticPeer) -> None:
    await client.send(Answer("x" * (ServerConfig().max_message_bytes + 1)))
    await asyncio.wait_for(client.closed.wait(), 5)
    assert client.close_code == 4413


async def test_a_client_that_never_joins_is_closed_with_4408() -> None:
    async with served_on_loopback(ServerConfig(join_timeout=0.5)) as served:
        peer = SyntheticPeer(served.url, "room-t", "127.0.43.1")
        try:
            await peer.connect()
            await asyncio.wait_for(peer.closed.wait(), 5)
            assert peer.close_code == 4408
            assert peer.messages == [ClosingMessage("join-timeout", "no join within 0.5 s").to_message()]
        finally:
            await peer.close()


async def test_too_many_bad_messages_close_with_4400(served: Served, client: SyntheticPeer) -> None:
    for _ in range(ServerConfig().max_errors + 1):
        await client.send_raw("nonsense")
    await asyncio.wait_for(client.closed.wait(), 5)
    assert client.close_code == 4400
    assert [m["code"] for m in client.messages if m["type"] == "error"] == ["malformed-json"] * 10


@pytest.mark.slow
async def test_an_invalid_sdp_answer_closes_that_session_with_4415_and_the_others_media_keeps_running(
    served: Served,
) -> None:
    peers = [
        SyntheticPeer(served.url, "room-y", f"127.0.41.{i + 1}", tracks=synthetic_tracks()) for i in range(2)
    ]
    bad = SyntheticPeer(served.url, "room-y", "127.0.41.9", name="bad")
    try:
        for peer in peers:
            await peer.join()

        def media_flows() -> str | None:
            for peer, other in ((peers[0], peers[1]), (peers[1], peers[0])):
                counters = peer.meters(str(other.participant_id), "video")
                if not counters or counters[0].frames < 10:
                    return f"{peer.name} receives no video yet"
            return None

        await eventually(media_flows, within=20)
        # The bad client joins, receives an offer for the others' tracks, and answers nonsense.
        await bad.connect()
        bad._answer = _answer_garbage(bad)  # type: ignore[method-assign]
        await bad.join(publish={})
        await asyncio.wait_for(bad.closed.wait(), 10)
        assert bad.close_code == 4415
        closing = bad.messages[-1]
        assert closing["type"] == "closing"
        assert closing["message"].startswith("invalid SDP answer")
        assert str(bad.participant_id) not in served.sfu.participants
        frames = [peers[0].meters(str(peers[1].participant_id), "video")[0].frames]
        await eventually(
            lambda: None if _video_frames(peers) > frames[0] + 20 else "video stalled", within=10
        )
    finally:
        await bad.close()
        for peer in peers:
            await peer.close()


def _video_frames(peers: list[SyntheticPeer]) -> int:
    return peers[0].meters(str(peers[1].participant_id), "video")[0].frames


def _answer_garbage(peer: SyntheticPeer) -> Any:
    async def answer(offer: OfferMessage) -> None:
        await peer.send(Answer("v=0\r\nthis is not an answer\r\n"))

    return answer


async def test_a_refused_join_gets_the_reason_and_4403_and_nothing_is_allocated() -> None:
    seen: list[JoinRequest] = []

    def admission(request: JoinRequest) -> Refusal | None:
        seen.append(request)
        return Refusal("not in this room") if request.name == "blocked" else None

    async with served_on_loopback(admission=admission) as served:
        peer = SyntheticPeer(served.url, "room-z", "127.0.42.1", name="blocked", tracks=synthetic_tracks())
        try:
            await peer.join()
            await asyncio.wait_for(peer.closed.wait(), 5)
            assert peer.close_code == 4403
            assert peer.messages == [RefusedMessage("not in this room").to_message()]
            assert peer.offers == 0
            assert served.sfu.participants == {}
            assert served.sfu.rooms == {}
            assert [(r.room, r.name, r.address) for r in seen] == [("room-z", "blocked", "127.0.42.1")]
        finally:
            await peer.close()


def _answer_then(peer: SyntheticPeer, alter: Callable[[str], str], close_pc: bool = False) -> Any:
    """Answer like the peer does, but send ``alter(answer)``; ``close_pc``: nobody answers ICE checks."""
    answer_for_real = peer._answer

    async def answer(offer: OfferMessage) -> None:
        sent: list[ClientMessage] = []
        send = peer.send

        async def keep(message: ClientMessage) -> None:
            sent.append(message)

        peer.send = keep  # type: ignore[method-assign]
        try:
            await answer_for_real(offer)
        finally:
            peer.send = send  # type: ignore[method-assign]
        if close_pc and peer.pc is not None:
            await peer.pc.close()  # its candidates now point at loopback ports nobody listens on
        for message in sent:
            assert isinstance(message, Answer)
            await peer.send(Answer(alter(message.sdp)))

    return answer


async def test_an_answer_without_a_dtls_fingerprint_closes_with_4415_and_says_so(
    served: Served, client: SyntheticPeer
) -> None:
    client._answer = _answer_then(  # type: ignore[method-assign]
        client,
        lambda sdp: "".join(line for line in sdp.splitlines(True) if not line.startswith("a=fingerprint")),
    )
    await client.join(publish={"audio": True})  # something to negotiate
    await asyncio.wait_for(client.closed.wait(), 10)
    assert client.close_code == 4415
    assert client.messages[-1]["type"] == "closing"
    assert "no DTLS fingerprint" in client.messages[-1]["message"]
    assert served.sfu.participants == {}


async def test_a_media_connection_that_never_comes_up_is_closed_with_4410() -> None:
    async with served_on_loopback(ServerConfig(connect_timeout=1.0)) as served:
        peer = SyntheticPeer(served.url, "room-c", "127.0.43.1", name="ghost")
        peer._answer = _answer_then(peer, lambda sdp: sdp, close_pc=True)  # type: ignore[method-assign]
        try:
            await peer.join(publish={"audio": True})
            await asyncio.wait_for(peer.closed.wait(), 10)
            assert peer.close_code == 4410
            assert (
                peer.messages[-1]
                == ClosingMessage("disconnected", "no media connection within 1 s of the answer").to_message()
            )
            assert served.sfu.participants == {}
        finally:
            await peer.close()


def test_a_close_reason_is_cut_to_123_bytes_on_a_character_boundary() -> None:
    reason = close_reason_bytes("é" * 100)  # 200 bytes of UTF-8
    assert len(reason) == 122
    assert reason.decode() == "é" * 61


async def test_the_message_limit_counts_utf8_bytes_not_characters() -> None:
    async with served_on_loopback(ServerConfig(max_message_bytes=1000)) as served:
        peer = SyntheticPeer(served.url, "room-u", "127.0.44.1")
        try:
            await peer.connect()
            # 700 characters, over 1000 bytes.
            await peer.send_raw(json.dumps(Answer("é" * 600).to_message(), ensure_ascii=False))
            await asyncio.wait_for(peer.closed.wait(), 5)
            assert peer.close_code == 4413
        finally:
            await peer.close()


async def test_joined_hands_the_client_the_configured_ice_servers_and_says_nothing_of_them_by_default(
    served: Served,
) -> None:
    turn = IceServer("turn:127.0.0.1:3478", "meeting", "s3cret-credential")
    async with served_on_loopback(
        ServerConfig(ice_servers=(turn, IceServer("stun:127.0.0.1:3478")))
    ) as with_turn:
        for url, expected in (
            (served.url, None),
            (
                with_turn.url,
                [
                    {"urls": "turn:127.0.0.1:3478", "username": "meeting", "credential": "s3cret-credential"},
                    {"urls": "stun:127.0.0.1:3478"},
                ],
            ),
        ):
            peer = SyntheticPeer(url, "room-t", "127.0.40.9", name="t")
            try:
                await peer.join(publish={})
                [joined] = [m for m in peer.messages if m["type"] == "joined"]
                assert joined.get("ice_servers") == expected
            finally:
                await peer.close()
