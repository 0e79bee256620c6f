"""The Janus API client against a real Janus: sessions live and die on Janus as the client says, and a
session Janus forgets is closed for the client too (no ghost session)."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from sfu_geofence.janus import JanusAdmin, JanusError, JanusSession
from sfu_geofence.janus.client import SESSION_NOT_FOUND
from sfu_geofence.testing.janus import JanusServer

pytestmark = [pytest.mark.janus, pytest.mark.lan]


async def test_a_session_and_its_handle_exist_on_janus_until_destroyed(
    janus: JanusServer, http: aiohttp.ClientSession
) -> None:
    admin = JanusAdmin(http, janus.admin_url, janus.admin_secret)
    session = await JanusSession.create(http, janus.api_url)
    handle = await session.attach("janus.plugin.videoroom")
    assert session.session_id in await admin.sessions()
    assert await admin.handles(session.session_id) == [handle.handle_id]
    await session.keepalive()

    await session.destroy()

    assert session.closed.is_set()
    assert session.session_id not in await admin.sessions()


async def test_attaching_to_a_plugin_janus_does_not_run_is_a_janus_error(session: JanusSession) -> None:
    with pytest.raises(JanusError) as refused:
        await session.attach("janus.plugin.echotest")  # disabled by the harness
    assert refused.value.code == 460  # JANUS_ERROR_PLUGIN_NOT_FOUND


async def test_a_session_janus_destroys_is_closed_for_the_client(
    janus: JanusServer, http: aiohttp.ClientSession
) -> None:
    admin = JanusAdmin(http, janus.admin_url, janus.admin_secret)
    session = await JanusSession.create(http, janus.api_url)
    try:
        await admin.request("destroy_session", session=session.session_id)

        with pytest.raises(JanusError) as gone:
            await session.keepalive()
        assert gone.value.code == SESSION_NOT_FOUND
        assert session.closed.is_set()
    finally:
        await session.destroy()


async def test_a_long_poll_on_a_session_janus_does_not_know_ends_the_session(
    janus: JanusServer, http: aiohttp.ClientSession
) -> None:
    # Janus's HTTP transport answers it with an empty 404 (a restarted Janus does, for every old
    # session): the poll ends and closes the session, instead of asking again and again.
    stranger = JanusSession(http, janus.api_url, session_id=123456789)
    async with asyncio.timeout(5):
        await stranger._poll()
    assert stranger.closed.is_set()
