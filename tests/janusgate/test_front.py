"""The gate's front: what a client sends that must never reach Janus, whose address counts, and the
WebSocket API (subprotocol ``janus-protocol``) beside the HTTP one."""

from __future__ import annotations

import secrets
from typing import Any

import aiohttp
import pytest
from gated import ROOM_SECRET, GatedJanus, address, gate_config, put_policy

from sfu_geofence.janus import JanusAdmin, JanusError
from sfu_geofence.janus.videoroom import PLUGIN, VideoRoom
from sfu_geofence.janusgate.wire import MAX_MESSAGE_BYTES
from sfu_geofence.server.remote import ProxyConfig
from sfu_geofence.testing.janusgate import ServedGate, gate_client, serving_gate
from sfu_geofence.testing.wait import eventually

pytestmark = [pytest.mark.janus, pytest.mark.lan]

JOIN = {"request": "join", "ptype": "publisher", "display": "x"}


async def test_a_spoofed_x_forwarded_for_from_an_untrusted_peer_is_ignored(
    gated_janus: GatedJanus, operator: VideoRoom, http: aiohttp.ClientSession
) -> None:
    room = await operator.create_room(5001, secret=ROOM_SECRET)
    config = gate_config(gated_janus, proxies=ProxyConfig(("127.0.0.1",)))
    async with serving_gate(config) as served:
        await put_policy(http, served, room, {"mode": "deny", "countries": ["CN"]})
        # From CN, claiming to be forwarded for a US address: not a trusted proxy, so not believed.
        async with gate_client(served.api_url, address("CN", 21), forwarded_for=address("US", 21)) as spoofer:
            handle = await spoofer.session.attach(PLUGIN)
            with pytest.raises(JanusError) as refused:
                await handle.message({**JOIN, "room": room})
            assert (refused.value.code, refused.value.reason) == (
                403,
                "This meeting is not accessible from China (CN).",
            )
        # The trusted proxy (127.0.0.1) is believed: it forwards a US client, then a CN one.
        async with gate_client(served.api_url, "127.0.0.1", forwarded_for=address("US", 22)) as us:
            await (await us.session.attach(PLUGIN)).message({**JOIN, "room": room})
        async with gate_client(served.api_url, "127.0.0.1", forwarded_for=address("CN", 22)) as cn:
            with pytest.raises(JanusError) as refused:
                await (await cn.session.attach(PLUGIN)).message({**JOIN, "room": room})
            assert refused.value.code == 403
        addresses = [e.address for e in served.gate.geofence.audit.events(room=str(room), kind="admission")]
        assert addresses == [address("CN", 21), address("US", 22), address("CN", 22)]


async def _post(http: aiohttp.ClientSession, url: str, data: bytes) -> tuple[int, Any]:
    async with http.post(url, data=data) as answer:
        return answer.status, await answer.json(content_type=None)


async def test_malformed_and_oversized_messages_are_answered_by_the_gate_and_never_reach_janus(
    served: ServedGate, gated_janus: GatedJanus, http: aiohttp.ClientSession
) -> None:
    admin = JanusAdmin(http, gated_janus.janus.admin_url, gated_janus.janus.admin_secret)
    before = set(await admin.sessions())
    url = served.api_url
    too_big = b'{"janus": "create", "transaction": "t", "x": "' + b"a" * MAX_MESSAGE_BYTES + b'"}'
    answers = [
        await _post(http, url, b"not json"),
        await _post(http, url, b"[1, 2]"),
        await _post(http, url, b'{"janus": "create"}'),
        await _post(http, url, b'{"transaction": "t"}'),
        await _post(http, url, b"[" * 100_000 + b"]" * 100_000),
        await _post(http, url, too_big),
    ]
    assert [(status, body["janus"], body["error"]["code"]) for status, body in answers] == [
        (200, "error", 454),
        (200, "error", 455),
        (200, "error", 456),
        (200, "error", 452),
        (200, "error", 454),
        (413, "error", 450),
    ]
    assert set(await admin.sessions()) == before
    # A session the gate did not create is not relayed, whatever its id.
    status, body = await _post(http, f"{url}/123456789", b'{"janus": "keepalive", "transaction": "k"}')
    assert (status, body["error"]["code"]) == (200, 458)


async def test_the_websocket_api_is_geofenced_too_and_its_sessions_end_with_it(
    served: ServedGate, operator: VideoRoom, gated_janus: GatedJanus, http: aiohttp.ClientSession
) -> None:
    room = await operator.create_room(5002, secret=ROOM_SECRET)
    await put_policy(http, served, room, {"mode": "deny", "countries": ["CN"]})
    admin = JanusAdmin(http, gated_janus.janus.admin_url, gated_janus.janus.admin_secret)
    outcomes = {}
    for country in ("CN", "DE"):
        connector = aiohttp.TCPConnector(local_addr=(address(country, 31), 0))
        async with (
            aiohttp.ClientSession(connector=connector) as client,
            client.ws_connect(served.websocket_url, protocols=("janus-protocol",)) as ws,
        ):
            assert ws.protocol == "janus-protocol"

            async def ask(body: dict[str, Any], ws: aiohttp.ClientWebSocketResponse = ws) -> dict[str, Any]:
                transaction = secrets.token_hex(6)
                await ws.send_json({**body, "transaction": transaction})
                while True:  # the answer to this transaction (events of the session may come between)
                    message: dict[str, Any] = await ws.receive_json(timeout=10)
                    if message.get("transaction") == transaction and message["janus"] != "ack":
                        return message

            session = (await ask({"janus": "create"}))["data"]["id"]
            handle = (await ask({"janus": "attach", "plugin": PLUGIN, "session_id": session}))["data"]["id"]
            answer = await ask(
                {
                    "janus": "message",
                    "session_id": session,
                    "handle_id": handle,
                    "body": {**JOIN, "room": room},
                }
            )
            outcomes[country] = answer
            assert session in await admin.sessions()
            # Too large to be read, so answered without a transaction (as Janus answers unparsable input).
            await ws.send_json({"janus": "keepalive", "session_id": session, "x": "x" * MAX_MESSAGE_BYTES})
            refusal = await ws.receive_json(timeout=10)
            while refusal["janus"] != "error":
                refusal = await ws.receive_json(timeout=10)
            assert refusal["error"]["code"] == 450

        async def destroyed(
            session: int = session,
        ) -> str | None:  # the WebSocket closed: so does its session
            return None if session not in await admin.sessions() else f"session {session} still on Janus"

        await eventually(destroyed, within=10.0)
    assert outcomes["CN"]["error"] == {
        "code": 403,
        "reason": "This meeting is not accessible from China (CN).",
    }
    assert outcomes["DE"]["plugindata"]["data"]["videoroom"] == "joined"


async def test_one_address_holds_a_bounded_number_of_sessions_and_others_are_not_affected(
    gated_janus: GatedJanus, http: aiohttp.ClientSession
) -> None:
    admin = JanusAdmin(http, gated_janus.janus.admin_url, gated_janus.janus.admin_secret)
    before = set(await admin.sessions())
    async with serving_gate(gate_config(gated_janus, max_sessions_per_address=3)) as served:
        connector = aiohttp.TCPConnector(local_addr=(address("DE", 61), 0))
        async with aiohttp.ClientSession(connector=connector) as flooder:
            create = b'{"janus": "create", "transaction": "c"}'
            answers = [await _post(flooder, served.api_url, create) for _ in range(5)]
        assert [body["janus"] for _, body in answers] == ["success"] * 3 + ["error"] * 2
        assert answers[-1][1]["error"] == {
            "code": 490,
            "reason": "Too many sessions from your address (at most 3)",
        }
        assert len(set(await admin.sessions()) - before) == 3  # the refused ones never reached Janus
        async with gate_client(served.api_url, address("DE", 62)) as other:
            assert other.session.session_id in served.gate.sessions
