"""The demo server: its pages, its operator API, and the demo-only way a tab "comes from" a country."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import re
import signal
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from sfu_geofence.cli import main
from sfu_geofence.commands import demo as demo_command
from sfu_geofence.core.geolocation import Locator
from sfu_geofence.protocol import IceServer, Join, Leave, RefusedMessage, encode
from sfu_geofence.rtc.machine import machine_ice_policy
from sfu_geofence.server import GEOFENCE_HOST, SFU, ServerConfig, create_geofenced_app
from sfu_geofence.server.admin import TOKEN_ENV, AdminConfig
from sfu_geofence.server.demo import SAMPLE_ORIGINS, DemoConfig, create_demo_app, pretend_origin
from sfu_geofence.server.remote import ProxyConfig
from sfu_geofence.synthetic.client import SyntheticPeer, synthetic_tracks
from sfu_geofence.testing.process import spawn_module, stop
from sfu_geofence.testing.server import Served, app_on_loopback
from sfu_geofence.testing.wait import eventually

TOKEN = "demo-test-token-0123456789"


async def _serve(app: web.Application) -> AsyncIterator[str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def demo_app() -> web.Application:
    return create_demo_app(DemoConfig(ServerConfig(port=0, admin=AdminConfig(TOKEN))))


@pytest.fixture
async def demo_served(demo_app: web.Application) -> AsyncIterator[Served]:
    async with app_on_loopback(demo_app) as served:
        yield served


@pytest.fixture
def demo_url(demo_served: Served) -> str:
    """The public listener: signaling and the meeting page."""
    return demo_served.base


@pytest.fixture
def admin_url(demo_served: Served) -> str:
    """The admin listener: the console, the operator API, the metrics."""
    assert demo_served.admin_base is not None
    return demo_served.admin_base


async def _joined_address(app: web.Application, ws_url: str, room: str = "r1") -> str:
    """Join over a real WebSocket and return the address the SFU admitted the participant with."""
    async with aiohttp.ClientSession() as http, http.ws_connect(ws_url) as ws:
        await ws.send_str(encode(Join(room, "n")))
        joined: dict[str, Any] = json.loads((await ws.receive(timeout=10)).data)
        assert joined["type"] == "joined", joined
        address = app[SFU].participants[joined["participant"]].address
        await ws.send_str(encode(Leave()))
        await ws.receive(timeout=10)
        return address


def test_every_sample_origin_is_placed_in_its_country_by_the_embedded_database() -> None:
    locator = Locator()
    try:
        placed = {o.country: locator.locate(o.address).country for o in SAMPLE_ORIGINS}
    finally:
        locator.close()
    assert placed == {o.country: o.country for o in SAMPLE_ORIGINS}
    assert {"US", "DE", "CN", "HK", "TW"} <= set(placed)


async def test_a_websocket_with_from_joins_from_that_countrys_sample_address(
    demo_app: web.Application, demo_url: str
) -> None:
    ws = demo_url.replace("http", "ws") + "/ws"
    assert await _joined_address(demo_app, ws + "?from=CN") == "114.114.114.114"
    assert await _joined_address(demo_app, ws + "?from=de") == "194.25.0.60"
    assert await _joined_address(demo_app, ws) == "127.0.0.1"

    def room_empty() -> str | None:
        return None if not demo_app[SFU].participants else f"still there: {demo_app[SFU].participants}"

    await eventually(room_empty, within=10)


async def test_the_demo_admits_through_the_geofence_a_room_policy_refuses_the_pretended_country(
    demo_app: web.Application, demo_url: str, admin_url: str
) -> None:
    """No admission of the demo's own: the operator API's policy is what refuses a ``?from=CN`` tab."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    ws = demo_url.replace("http", "ws") + "/ws"
    async with aiohttp.ClientSession() as http:
        policy = {"mode": "deny", "countries": ["CN"]}
        async with http.put(f"{admin_url}/api/rooms/r1/policy", json=policy, headers=headers) as response:
            assert response.status == 200, await response.text()
        async with http.ws_connect(ws + "?from=CN") as refused:
            await refused.send_str(encode(Join("r1", "n")))
            answer = json.loads((await refused.receive(timeout=10)).data)
            closed = await refused.receive(timeout=10)
        assert answer == RefusedMessage("This meeting is not accessible from China (CN).").to_message()
        assert (closed.type, refused.close_code) == (aiohttp.WSMsgType.CLOSE, 4403)
        assert await _joined_address(demo_app, ws + "?from=DE") == "194.25.0.60"
        async with http.get(f"{admin_url}/api/audit", headers=headers) as response:
            events = (await response.json())["events"]
    joins = [
        (e["kind"], e["outcome"], e["address"], e["country"]) for e in events if e["kind"] == "admission"
    ]
    assert joins == [
        ("admission", "refused", "114.114.114.114", "CN"),
        ("admission", "admitted", "194.25.0.60", "DE"),
    ]


async def test_demo_media_comes_from_loopback_which_a_room_refusing_unknown_countries_ejects(
    demo_app: web.Application, demo_url: str, admin_url: str
) -> None:
    """What docs/demo.md says: ``?from=`` moves the signaling address only; the geofence's media check
    sees every tab's real ICE address (127.0.0.1, in no country). Exempting 127.0.0.0/8 lets a room
    refuse unknown countries in the demo; without the exemption the tab is ejected."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    room = f"{admin_url}/api/rooms/lab"
    refuse_unknown: dict[str, Any] = {"mode": "deny", "countries": [], "unknown": "refuse"}
    ws = demo_url.replace("http", "ws") + "/ws?from=DE"
    peer = SyntheticPeer(ws, "lab", "127.0.0.1", name="de", tracks=synthetic_tracks())
    async with aiohttp.ClientSession() as http:
        exempt = refuse_unknown | {"exempt_networks": ["127.0.0.0/8"]}
        async with http.put(f"{room}/policy", json=exempt, headers=headers) as response:
            assert response.status == 200, await response.text()
        try:
            await peer.join()
            assert peer.joined.is_set(), peer.messages
            fence = demo_app[GEOFENCE_HOST].geofence

            def media_checked() -> str | None:
                [view] = fence.participants("lab")
                return None if view.media_decision else "the media address is not reported yet"

            await eventually(media_checked, within=30)
            async with http.get(f"{room}/participants", headers=headers) as response:
                [participant] = (await response.json())["participants"]
            media = participant["media"]
            assert (participant["address"], participant["country"]) == ("194.25.0.60", "DE")
            assert (media["address"], media["country"], media["reason"], media["outcome"]) == (
                "127.0.0.1",
                None,
                "exempt_network",
                "admitted",
            )
            async with http.put(f"{room}/policy", json=refuse_unknown, headers=headers) as response:
                assert response.status == 200, await response.text()
            await asyncio.wait_for(peer.closed.wait(), 10)
        finally:
            await peer.close()
    assert peer.close_code == 4409
    assert [m["reason"] for m in peer.messages if m["type"] == "ejected"] == [
        "You were removed: this meeting is no longer accessible from an unknown location "
        "(your country could not be determined)."
    ]


async def test_an_unknown_origin_is_refused_naming_the_known_ones(demo_url: str) -> None:
    async with aiohttp.ClientSession() as http, http.get(demo_url + "/ws?from=XX") as response:
        assert response.status == 400
        assert await response.text() == "?from='XX' is not a sample origin: US, DE, FR, JP, CN, HK, TW"


class _Transport:
    """A TCP transport whose peer is ``peer``: the one thing a test here cannot make for real."""

    def __init__(self, peer: str) -> None:
        self.peer = peer

    def get_extra_info(self, name: str, default: object = None) -> object:
        return (self.peer, 40000) if name == "peername" else default


async def _remote(request: web.Request) -> web.Response:
    return web.Response(text=request.remote or "")


@pytest.mark.parametrize("peer", ["127.0.0.1", "127.9.9.9", "::1"])
async def test_from_makes_a_local_clients_request_come_from_the_sample_address(peer: str) -> None:
    middleware = pretend_origin({o.country: o for o in SAMPLE_ORIGINS})
    request = make_mocked_request("GET", "/ws?from=CN", transport=_Transport(peer))
    response = await middleware(request, _remote)
    assert isinstance(response, web.Response)
    assert response.text == "114.114.114.114"


async def test_from_is_refused_to_a_client_on_another_machine() -> None:
    middleware = pretend_origin({o.country: o for o in SAMPLE_ORIGINS})
    request = make_mocked_request("GET", "/ws?from=CN", transport=_Transport("192.0.2.9"))
    with pytest.raises(web.HTTPForbidden) as refused:
        await middleware(request, _remote)
    assert refused.value.text == "?from= is honoured only for clients on this machine"


async def test_serve_has_no_such_mechanism_its_participants_come_from_their_socket() -> None:
    app = create_geofenced_app(ServerConfig(port=0))
    async for url in _serve(app):
        ws = url.replace("http", "ws") + "/ws?from=CN"
        assert await _joined_address(app, ws) == "127.0.0.1"


async def test_the_meeting_is_on_the_public_listener_the_console_and_its_api_on_the_admin_one(
    demo_url: str, admin_url: str
) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(demo_url + "/") as page:
            assert page.status == 200
            text = await page.text()
            assert "Join a meeting" in text
            assert '<a href="https://db-ip.com"' in text
        async with http.get(admin_url + "/console") as console:
            assert "Operator token" in await console.text()
        for base, assets in [(demo_url, ["app.js", "style.css"]), (admin_url, ["console.js", "style.css"])]:
            for asset in assets:
                async with http.get(f"{base}/demo/{asset}") as response:
                    assert response.status == 200
                    assert ("css" if asset.endswith("css") else "javascript") in response.headers[
                        "Content-Type"
                    ]
        async with http.get(demo_url + "/origins") as response:
            origins = await response.json()
            assert origins["attribution"] == "IP Geolocation by DB-IP (https://db-ip.com)"
            assert {"country": "CN", "name": "China", "address": "114.114.114.114"} in origins["origins"]
        headers = {"Authorization": f"Bearer {TOKEN}"}
        for path in ["/console", "/api/rooms", "/metrics"]:  # nothing of the operator's on the public port
            async with http.get(demo_url + path, headers=headers) as response:
                assert response.status == 404, path
        async with http.get(admin_url + "/api/rooms") as response:
            assert response.status == 401
        async with http.get(admin_url + "/api/rooms", headers=headers) as response:
            assert (response.status, await response.json()) == (200, {"rooms": []})


def test_the_demo_listens_on_loopback_only_needs_a_real_token_and_trusts_no_proxy() -> None:
    server = ServerConfig(admin=AdminConfig(TOKEN))
    assert DemoConfig(server).admin_token == TOKEN
    with pytest.raises(ValueError, match=r"listens on loopback only, not on 192\.0\.2\.2"):
        DemoConfig(replace(server, host="192.0.2.2"))
    with pytest.raises(ValueError, match="console needs an operator token"):
        DemoConfig(ServerConfig())
    with pytest.raises(ValueError, match="at least 16 characters"):
        DemoConfig(ServerConfig(admin=AdminConfig("short")))
    with pytest.raises(ValueError, match="trusts no proxy"):
        DemoConfig(replace(server, proxies=ProxyConfig(("127.0.0.1",))))


def test_the_command_takes_the_token_from_the_environment_or_makes_one_up() -> None:
    parser = argparse.ArgumentParser()
    demo_command.configure(parser)
    args = parser.parse_args(["--port", "0"])
    given = demo_command.config_from_args(args, {TOKEN_ENV: TOKEN})
    assert given.admin_token == TOKEN
    made = {demo_command.config_from_args(args, {}).admin_token for _ in range(2)}
    assert len(made) == 2
    assert all(len(token) >= 16 for token in made)
    # ICE on loopback and this machine's own addresses: a browser as shipped has a way in.
    assert given.server.ice == machine_ice_policy()
    assert given.server.ice.bind[0] == "127.0.0.1"
    assert given.server.turn_relays == ()


def test_the_command_declares_turn_relays_by_flag_or_environment() -> None:
    parser = argparse.ArgumentParser()
    demo_command.configure(parser)
    flagged = demo_command.config_from_args(parser.parse_args(["--turn-relay", "127.0.0.7"]), {})
    assert flagged.server.ice.relay_networks == (ipaddress.ip_network("127.0.0.7/32"),)
    env = {"SFU_GEOFENCE_TURN_RELAY": "127.0.0.8,127.0.0.9"}
    from_env = demo_command.config_from_args(parser.parse_args([]), env)
    assert [str(n) for n in from_env.server.turn_relays] == ["127.0.0.8/32", "127.0.0.9/32"]


def test_the_command_hands_browsers_a_turn_server_whose_credential_comes_from_the_environment() -> None:
    parser = argparse.ArgumentParser()
    demo_command.configure(parser)
    args = parser.parse_args(["--turn", "turn:127.0.0.1:3478"])
    env = {"SFU_GEOFENCE_TURN_USERNAME": "meeting", "SFU_GEOFENCE_TURN_CREDENTIAL": "s3cret-credential"}
    assert demo_command.config_from_args(args, env).server.ice_servers == (
        IceServer("turn:127.0.0.1:3478", "meeting", "s3cret-credential"),
    )
    with pytest.raises(ValueError, match="needs a username and a credential"):
        demo_command.config_from_args(args, {})


def test_the_command_refuses_a_non_loopback_address(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--host", "192.0.2.2"]) == 2
    assert "listens on loopback only" in capsys.readouterr().err


async def test_the_readme_command_starts_prints_where_to_go_and_stops_on_sigterm() -> None:
    process = await spawn_module(
        "sfu_geofence", "demo", "--port", "0", "--admin-port", "0", "--log-level", "error"
    )
    try:
        assert process.stdout is not None
        printed = [(await asyncio.wait_for(process.stdout.readline(), 20)).decode() for _ in range(6)]
        assert printed[0].startswith("sfu-geofence demo: video meeting and operator console (DB-IP")
        [page] = re.findall(r"open (http://127\.0\.0\.1:\d+/) ", printed[1])
        [console, token] = re.findall(r"operator console: (http://\S+/)console#token=(\S+)", printed[2])[0]
        assert console != page  # the admin listener's own port
        assert printed[4].strip() == "IP Geolocation by DB-IP (https://db-ip.com)"
        async with aiohttp.ClientSession() as http:
            async with http.get(page) as response:
                assert response.status == 200
            async with http.get(console + "console") as response:
                assert response.status == 200
            headers = {"Authorization": f"Bearer {token}"}
            async with http.get(console + "api/database", headers=headers) as response:
                assert (await response.json())["embedded"] is True
            async with http.get(page + "api/database", headers=headers) as response:
                assert response.status == 404
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 10) == 0
    finally:
        await stop(process)
