"""Janus's Admin API over HTTP: what an operator (or the geofence) may do to any session or handle.

Every request carries the ``admin_secret`` of janus.jcfg; Janus answers 403 without it. This is how
a participant can be ejected without its own cooperation or a room's secret: ``hangup_webrtc`` ends
its PeerConnection, ``detach_handle`` removes its handle; ``handle_info`` shows its ICE state and
selected pair (the media address the geofence re-checks).
"""

from __future__ import annotations

import secrets

import aiohttp

from .client import REQUEST_TIMEOUT_S, JsonObject, check_reply


class JanusAdmin:
    """Admin API requests to one Janus (``http://host:port/admin``) with its admin secret."""

    def __init__(self, http: aiohttp.ClientSession, url: str, secret: str) -> None:
        self.http = http
        self.url = url.rstrip("/")
        self._secret = secret

    async def request(
        self, janus: str, *, session: int | None = None, handle: int | None = None
    ) -> JsonObject:
        """POST ``{"janus": janus}`` to the Admin API (under a session, and a handle of it, if given)."""
        path = "".join(f"/{part}" for part in (session, handle) if part is not None)
        body = {"janus": janus, "transaction": secrets.token_hex(8), "admin_secret": self._secret}
        async with self.http.post(
            f"{self.url}{path}", json=body, timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
        ) as response:
            reply: JsonObject = await response.json(content_type=None)
        return check_reply(reply)

    async def sessions(self) -> list[int]:
        return [int(s) for s in (await self.request("list_sessions"))["sessions"]]

    async def handles(self, session: int) -> list[int]:
        return [int(h) for h in (await self.request("list_handles", session=session))["handles"]]

    async def handle_info(self, session: int, handle: int) -> JsonObject:
        """Everything Janus knows of one handle (plugin, ICE state, selected pair, streams...)."""
        info: JsonObject = (await self.request("handle_info", session=session, handle=handle))["info"]
        return info

    async def hangup_webrtc(self, session: int, handle: int) -> None:
        """End the handle's PeerConnection (the handle and session stay)."""
        await self.request("hangup_webrtc", session=session, handle=handle)

    async def detach_handle(self, session: int, handle: int) -> None:
        """Detach the handle from its plugin: for VideoRoom, the participant leaves the room."""
        await self.request("detach_handle", session=session, handle=handle)
