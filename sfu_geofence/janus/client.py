"""A small async client of Janus's HTTP API (the "REST" transport): sessions, handles, long poll.

Janus answers a request on a session either at once (``success``, ``error``) or with an ``ack``
followed, later, by an ``event`` carrying the same transaction: events reach the client only through
the session's long poll (``GET /janus/<session>``). One task per session runs that poll and routes
each event to the request waiting for its transaction, or else to its handle's queue (unsolicited
events: a publisher joining, a kick, ``hangup``, ``webrtcup``). Every wait is bounded by a timeout,
so a Janus that stops answering fails the caller instead of hanging it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from dataclasses import dataclass
from typing import Any

import aiohttp

logger = logging.getLogger(__name__)

JsonObject = dict[str, Any]

REQUEST_TIMEOUT_S = 10.0
"""How long a request (and an asynchronous request's event) may take before :class:`JanusError`."""
KEEPALIVE_INTERVAL_S = 25.0
"""Under Janus's default ``session_timeout`` (60 s) with room to spare."""
MAX_EVENTS_PER_POLL = 10
SESSION_NOT_FOUND = 458
"""Janus's ``JANUS_ERROR_SESSION_NOT_FOUND``."""


class JanusError(Exception):
    """Janus refused a request (``{"janus": "error"}`` or a plugin's ``error_code``), or did not answer."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"janus error {code}: {reason}")
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class PluginReply:
    """What a plugin answered a message: its ``data`` object, and a JSEP when it carries one."""

    data: JsonObject
    jsep: JsonObject | None = None


def _transaction() -> str:
    return secrets.token_hex(8)


def check_reply(reply: JsonObject) -> JsonObject:
    """``reply`` itself, unless it is a Janus error (raised as :class:`JanusError`)."""
    if reply.get("janus") == "error":
        error = reply.get("error", {})
        raise JanusError(int(error.get("code", 0)), str(error.get("reason", "")))
    return reply


def plugin_reply(reply: JsonObject) -> PluginReply:
    """The plugin's part of a ``success`` or ``event`` message; a plugin-level error is raised."""
    data: JsonObject = reply.get("plugindata", {}).get("data", {})
    if "error_code" in data:
        raise JanusError(int(data["error_code"]), str(data.get("error", "")))
    return PluginReply(data, reply.get("jsep"))


class JanusSession:
    """One Janus session: requests, the long poll that delivers its events, and keepalives.

    Use :meth:`create` (or ``async with await JanusSession.create(...)``); :meth:`destroy` ends it.
    """

    def __init__(self, http: aiohttp.ClientSession, url: str, session_id: int) -> None:
        self.http = http
        self.url = url.rstrip("/")
        """The Janus API's base URL (``http://host:port/janus``)."""
        self.session_id = session_id
        self.handles: dict[int, JanusHandle] = {}
        self._waiting: dict[str, asyncio.Future[JsonObject]] = {}
        self._poller: asyncio.Task[None] | None = None
        self._keepalive: asyncio.Task[None] | None = None
        self.closed = asyncio.Event()
        """Set once the session is destroyed, or Janus said it is gone (a request or the long poll got
        "no such session")."""

    @classmethod
    async def create(
        cls,
        http: aiohttp.ClientSession,
        url: str,
        *,
        keepalive_interval: float | None = KEEPALIVE_INTERVAL_S,
    ) -> JanusSession:
        """Create a session on the Janus at ``url`` and start its long poll (and keepalives)."""
        reply = await _post(http, url.rstrip("/"), {"janus": "create", "transaction": _transaction()})
        session = cls(http, url, int(reply["data"]["id"]))
        session._poller = asyncio.create_task(session._poll(), name=f"janus-poll-{session.session_id}")
        if keepalive_interval is not None:
            session._keepalive = asyncio.create_task(session._keep_alive(keepalive_interval))
        return session

    @property
    def session_url(self) -> str:
        return f"{self.url}/{self.session_id}"

    async def request(
        self, body: JsonObject, *, path: str = "", within: float = REQUEST_TIMEOUT_S
    ) -> JsonObject:
        """POST ``body`` (a transaction is added) to the session (or ``path`` under it).

        An ``ack`` means the answer comes as an event: wait for the event of that transaction.
        """
        transaction = _transaction()
        waiter: asyncio.Future[JsonObject] = asyncio.get_running_loop().create_future()
        self._waiting[transaction] = waiter
        try:
            reply = await _post(self.http, f"{self.session_url}{path}", {**body, "transaction": transaction})
            if reply.get("janus") != "ack" or body.get("janus") != "message":
                return reply  # only plugin messages are answered later (a keepalive's ack is its answer)
            async with asyncio.timeout(within):
                return check_reply(await waiter)
        except TimeoutError:
            raise JanusError(0, f"no event for {body.get('janus')} within {within:g} s") from None
        except JanusError as error:
            if error.code == SESSION_NOT_FOUND and not self.closed.is_set():
                await self._stop()  # Janus forgot it (destroyed, timed out, restarted): so do we
            raise
        finally:
            self._waiting.pop(transaction, None)
            if not waiter.done():
                waiter.cancel()
            elif not waiter.cancelled():
                waiter.exception()  # retrieved: a session closed meanwhile is not an unhandled error

    async def attach(self, plugin: str) -> JanusHandle:
        """Attach a handle to ``plugin`` (e.g. ``janus.plugin.videoroom``)."""
        reply = await self.request({"janus": "attach", "plugin": plugin})
        handle = JanusHandle(self, int(reply["data"]["id"]), plugin)
        self.handles[handle.handle_id] = handle
        return handle

    async def keepalive(self) -> None:
        await self.request({"janus": "keepalive"})

    async def destroy(self) -> None:
        """Destroy the session on Janus (its handles with it) and stop polling; safe to call twice."""
        if self.closed.is_set():
            return
        with contextlib.suppress(JanusError, aiohttp.ClientError, TimeoutError):
            await self.request({"janus": "destroy"})
        await self._stop()

    async def _stop(self) -> None:
        self.closed.set()
        for task in (self._poller, self._keepalive):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for waiter in self._waiting.values():
            if not waiter.done():
                waiter.set_exception(JanusError(0, "session closed"))

    async def __aenter__(self) -> JanusSession:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.destroy()

    async def _keep_alive(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.keepalive()
            except (JanusError, aiohttp.ClientError, TimeoutError) as error:
                logger.debug("janus session %s: keepalive failed: %s", self.session_id, error)

    async def _poll(self) -> None:
        """The long poll: Janus holds each GET up to 30 s and answers with up to ``maxev`` events."""
        try:
            while True:
                async with self.http.get(
                    self.session_url,
                    params={"maxev": str(MAX_EVENTS_PER_POLL), "rid": _transaction()},
                    timeout=aiohttp.ClientTimeout(total=60),
                ) as response:
                    if response.status == 404:  # no such session (an empty body): Janus forgot it
                        logger.debug("janus session %s: gone (404 on the long poll)", self.session_id)
                        return
                    events = await response.json(content_type=None)
                if not isinstance(events, list | dict):
                    raise ValueError(f"Janus answered a long poll with {events!r}")
                for event in events if isinstance(events, list) else [events]:
                    if not isinstance(event, dict):
                        continue
                    if event.get("janus") == "error":
                        logger.debug("janus session %s: poll error %s", self.session_id, event)
                        return
                    self._route(event)
        except (aiohttp.ClientError, TimeoutError, ValueError) as error:
            logger.debug("janus session %s: long poll ended: %s", self.session_id, error)
        finally:
            if not self.closed.is_set():
                await self._stop()

    def _route(self, event: JsonObject) -> None:
        waiter = self._waiting.get(str(event.get("transaction")))
        if waiter is not None and not waiter.done() and event.get("janus") != "ack":
            waiter.set_result(event)
            return
        handle = self.handles.get(int(event.get("sender", 0)))
        if handle is not None:
            handle.events.put_nowait(event)


class JanusHandle:
    """One handle of a session, attached to one plugin; its unsolicited events queue in :attr:`events`."""

    def __init__(self, session: JanusSession, handle_id: int, plugin: str) -> None:
        self.session = session
        self.handle_id = handle_id
        self.plugin = plugin
        self.events: asyncio.Queue[JsonObject] = asyncio.Queue()
        """Events no request waited for (``webrtcup``, ``media``, ``hangup``, plugin events), in order."""

    async def message(self, body: JsonObject, jsep: JsonObject | None = None) -> PluginReply:
        """Send the plugin a message; its answer, now (``success``) or as the event that follows the ack."""
        request: JsonObject = {"janus": "message", "body": body}
        if jsep is not None:
            request["jsep"] = jsep
        return plugin_reply(await self.session.request(request, path=f"/{self.handle_id}"))

    async def next_event(self, janus: str | None = None, *, within: float = REQUEST_TIMEOUT_S) -> JsonObject:
        """The next unsolicited event (of type ``janus``, skipping others), within ``within`` seconds."""
        async with asyncio.timeout(within):
            while True:
                event = await self.events.get()
                if janus is None or event.get("janus") == janus:
                    return event

    async def hangup(self) -> None:
        """End this handle's PeerConnection; the handle stays attached."""
        await self.session.request({"janus": "hangup"}, path=f"/{self.handle_id}")

    async def detach(self) -> None:
        """Detach from the plugin: the handle is gone (and its PeerConnection with it)."""
        await self.session.request({"janus": "detach"}, path=f"/{self.handle_id}")
        self.session.handles.pop(self.handle_id, None)


async def _post(http: aiohttp.ClientSession, url: str, body: JsonObject) -> JsonObject:
    async with http.post(url, json=body, timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)) as response:
        reply: JsonObject = await response.json(content_type=None)
    return check_reply(reply)
