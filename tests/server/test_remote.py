"""The participant's address behind reverse proxies: real clients bound to distinct loopback addresses.

127.0.0.2 and 127.0.0.3 play the trusted proxies; 127.86/16 is CN, 127.49/16 DE and 127.1/16 US in
the test database, so the country the geofence decides shows whose address was believed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from sfu_geofence import Geofence
from sfu_geofence.server.remote import ProxyConfig, install_trusted_proxies, participant_address
from sfu_geofence.testing.host_contract import write_contract_database

PROXY, INNER_PROXY = "127.0.0.2", "127.0.0.3"
CN_CLIENT, DE_CLIENT, US_CLIENT = "127.86.0.9", "127.49.0.3", "127.1.0.7"


def whoami_app(fence: Geofence, config: ProxyConfig) -> web.Application:
    """What the signaling handler does: take the participant's address, ask the geofence."""

    async def whoami(request: web.Request) -> web.Response:
        address = participant_address(request)
        return web.json_response({"remote": address, "country": fence.decide("r", address).country})

    async def websocket(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_json({"remote": participant_address(request)})
        await ws.close()
        return ws

    app = web.Application()
    install_trusted_proxies(app, config)
    app.router.add_get("/whoami", whoami)
    app.router.add_get("/ws", websocket)
    return app


@pytest.fixture
async def fence(tmp_path: Path) -> AsyncIterator[Geofence]:
    fence = Geofence(lambda request: None, database=write_contract_database(tmp_path / "c.mmdb"))
    yield fence
    fence.close()


async def serve(app: web.Application) -> TestServer:
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server


async def whoami(server: TestServer, source: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """GET /whoami from a client socket bound to ``source``."""
    connector = aiohttp.TCPConnector(local_addr=(source, 0))
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.get(server.make_url("/whoami"), headers=headers or {}) as response,
    ):
        body = await response.json() if response.content_type == "application/json" else None
        return response.status, body


@pytest.fixture
async def behind_proxies(fence: Geofence) -> AsyncIterator[TestServer]:
    server = await serve(whoami_app(fence, ProxyConfig((PROXY, INNER_PROXY + "/32"))))
    yield server
    await server.close()


async def test_without_trusted_proxies_the_address_is_the_tcp_peer_whatever_the_headers(
    fence: Geofence,
) -> None:
    server = await serve(whoami_app(fence, ProxyConfig()))
    try:
        assert await whoami(server, DE_CLIENT) == (200, {"remote": DE_CLIENT, "country": "DE"})
        assert await whoami(server, PROXY, {"X-Forwarded-For": CN_CLIENT}) == (
            200,
            {"remote": PROXY, "country": None},
        )
    finally:
        await server.close()


async def test_a_trusted_proxy_forwarding_an_address_makes_it_the_participants(
    behind_proxies: TestServer,
) -> None:
    assert await whoami(behind_proxies, PROXY, {"X-Forwarded-For": CN_CLIENT}) == (
        200,
        {"remote": CN_CLIENT, "country": "CN"},
    )


async def test_a_forwarded_header_from_an_untrusted_address_changes_nothing(
    behind_proxies: TestServer,
) -> None:
    spoofed = {"X-Forwarded-For": CN_CLIENT}
    assert await whoami(behind_proxies, DE_CLIENT, spoofed) == (200, {"remote": DE_CLIENT, "country": "DE"})
    chain = {"X-Forwarded-For": f"{CN_CLIENT}, {PROXY}"}  # pretending to come through our proxy
    assert await whoami(behind_proxies, DE_CLIENT, chain) == (200, {"remote": DE_CLIENT, "country": "DE"})
    garbage = {"X-Forwarded-For": "not an address"}
    assert await whoami(behind_proxies, DE_CLIENT, garbage) == (200, {"remote": DE_CLIENT, "country": "DE"})
    assert await whoami(behind_proxies, DE_CLIENT) == (200, {"remote": DE_CLIENT, "country": "DE"})


async def test_the_chain_is_walked_from_the_right_through_trusted_proxies_only(
    behind_proxies: TestServer,
) -> None:
    two_hops = {"X-Forwarded-For": f"{CN_CLIENT}, {INNER_PROXY}"}
    assert await whoami(behind_proxies, PROXY, two_hops) == (200, {"remote": CN_CLIENT, "country": "CN"})


async def test_spoofed_left_most_entries_are_ignored(behind_proxies: TestServer) -> None:
    # The CN client wrote "US_CLIENT" itself; our proxies appended what they saw.
    spoofed = {"X-Forwarded-For": f"{US_CLIENT}, {CN_CLIENT}"}
    assert await whoami(behind_proxies, PROXY, spoofed) == (200, {"remote": CN_CLIENT, "country": "CN"})
    through_both = {"X-Forwarded-For": f"{US_CLIENT}, {DE_CLIENT}, {CN_CLIENT}, {INNER_PROXY}"}
    assert await whoami(behind_proxies, PROXY, through_both) == (200, {"remote": CN_CLIENT, "country": "CN"})


async def test_a_trusted_proxy_without_a_forwarded_address_is_itself_the_remote(
    behind_proxies: TestServer,
) -> None:
    assert await whoami(behind_proxies, PROXY) == (200, {"remote": PROXY, "country": None})


async def test_a_malformed_header_from_a_trusted_proxy_is_refused(behind_proxies: TestServer) -> None:
    status, _ = await whoami(behind_proxies, PROXY, {"X-Forwarded-For": f"{CN_CLIENT}, not-an-address"})
    assert status == 400


async def test_the_rfc_7239_forwarded_header_is_not_honoured(behind_proxies: TestServer) -> None:
    forwarded = {"Forwarded": f"for={CN_CLIENT}"}
    assert await whoami(behind_proxies, PROXY, forwarded) == (200, {"remote": PROXY, "country": None})


async def test_the_websocket_upgrade_sees_the_forwarded_address_too(behind_proxies: TestServer) -> None:
    for source, headers, remote in (
        (PROXY, {"X-Forwarded-For": CN_CLIENT}, CN_CLIENT),
        (DE_CLIENT, {"X-Forwarded-For": CN_CLIENT}, DE_CLIENT),
    ):
        connector = aiohttp.TCPConnector(local_addr=(source, 0))
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.ws_connect(behind_proxies.make_url("/ws"), headers=headers) as ws,
        ):
            assert (await ws.receive_json()) == {"remote": remote}


async def test_a_trusted_proxy_written_ipv4_mapped_is_trusted(fence: Geofence) -> None:
    # Peers and forwarded entries are compared unmapped: ::ffff:127.0.0.2 is the proxy 127.0.0.2.
    server = await serve(whoami_app(fence, ProxyConfig((f"::ffff:{PROXY}",))))
    try:
        assert await whoami(server, PROXY, {"X-Forwarded-For": CN_CLIENT}) == (
            200,
            {"remote": CN_CLIENT, "country": "CN"},
        )
    finally:
        await server.close()


def test_trusted_proxies_are_addresses_or_networks_and_are_normalised() -> None:
    assert ProxyConfig(("10.0.0.5", "10.1.2.3/16", "fd00::1", "::ffff:10.2.0.0/112")).trusted == (
        "10.0.0.5/32",
        "10.1.0.0/16",
        "fd00::1/128",
        "10.2.0.0/16",
    )
    with pytest.raises(ValueError, match=r"'proxy\.example' is not an IP address or network"):
        ProxyConfig(("proxy.example",))
    with pytest.raises(ValueError, match="not one string"):
        ProxyConfig("10.0.0.5")  # type: ignore[arg-type]
