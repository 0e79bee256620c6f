"""The Janus gate for tests, the load tester and benchmarks: served on loopback, and Janus clients
whose signaling comes from a chosen loopback address (a country of a test database).

Inside a LAN namespace (tests marked ``lan``) Janus gathers on the dummy interface only; clients
still reach the gate over loopback, each from an address of its own (``127.86.0.5`` is CN in the
test databases), which is the TCP peer the gate decides on.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, replace

import aiohttp
from aiohttp import web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from ..core.contract import CONTRACT_VERSION
from ..core.geofence import Geofence
from ..janus import JanusError, JanusHandle, JanusSession, VideoRoom
from ..janus.videoroom import PLUGIN
from ..janusgate import GateConfig, JanusGate, running_gate
from ..janusgate.wire import UNAUTHORIZED
from ..rtc.ice import IcePolicy, use_policy
from ..synthetic.media import OpusTrack, publish
from .netns import LAN_NETWORKS, add_lan_address
from .wait import eventually

HOST = "127.0.0.1"


@dataclass(frozen=True)
class ServedGate:
    """A gate serving on loopback: its Janus API URL for clients, its admin listener's base URL."""

    gate: JanusGate
    api_url: str
    """``http://127.0.0.1:<port>/janus``: where clients send what they would send Janus."""
    websocket_url: str
    admin_url: str
    """``http://127.0.0.1:<port>``: ``/api`` (operator API) and ``/janus-events`` (event handler)."""


@contextlib.asynccontextmanager
async def serving_gate(config: GateConfig) -> AsyncIterator[ServedGate]:
    """Run the gate of ``config`` on its host, its front and admin listener on their ports (0: free)."""
    config = replace(config, host=HOST)
    async with running_gate(config) as running:
        runners = []
        try:
            bases = []
            for app, port in ((running.front, config.port), (running.admin, config.admin_listener.port)):
                runner = web.AppRunner(app)
                await runner.setup()
                runners.append(runner)
                await web.TCPSite(
                    runner, config.admin_listener.host if app is running.admin else HOST, port
                ).start()
                bound_host, bound = runner.addresses[0][:2]
                bases.append(f"http://{bound_host}:{bound}")
            yield ServedGate(
                running.gate,
                f"{bases[0]}/janus",
                bases[0].replace("http://", "ws://") + "/",
                bases[1],
            )
        finally:
            for runner in reversed(runners):
                await runner.cleanup()


@dataclass
class GateClient:
    """One client of the gate: an HTTP client whose connections come from ``address``, its session."""

    address: str
    http: aiohttp.ClientSession
    session: JanusSession

    @property
    def rooms(self) -> VideoRoom:
        return VideoRoom(self.session)


@contextlib.asynccontextmanager
async def gate_client(
    api_url: str, address: str, *, forwarded_for: str | None = None
) -> AsyncIterator[GateClient]:
    """A Janus session through the gate, every connection of it from ``address`` (with an
    ``X-Forwarded-For: forwarded_for`` header on every request if given); destroyed afterwards."""
    connector = aiohttp.TCPConnector(local_addr=(address, 0))
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for is not None else None
    async with aiohttp.ClientSession(connector=connector, headers=headers) as http:
        session = await JanusSession.create(http, api_url)
        try:
            yield GateClient(address, http, session)
        finally:
            await session.destroy()


class JanusGateHarness:
    """The host-contract suite's view of Janus behind the gate (:class:`~.host_contract.HostHarness`).

    Rooms are created on Janus by name (its VideoRoom with ``string_ids``) as the suite first uses
    them. A participant is a gate client joining as a publisher from its address; with a media address
    it also publishes, its aiortc peer gathering there. Who Janus serves is read from Janus itself
    (``listparticipants``, polled), not from the gate.

    Janus never gathers on loopback, and the kernel does not keep a loopback source on the way to it,
    so a media address of the contract (``127.86.x.y``) is played by the LAN address ``media_address``
    maps it to (added to the namespace's dummy), which the gate's database must place in the same
    country (:func:`lan_media_address`, :func:`lan_twins`).
    """

    contract_version = CONTRACT_VERSION

    def __init__(
        self,
        served: ServedGate,
        janus_api_url: str,
        *,
        media_address: Callable[[str], str] = lambda address: address,
        relay_address: Callable[[str], str] | None = None,
        secret: str = "contract",
    ) -> None:
        self.served = served
        self.media_address = media_address
        self.relay_address = relay_address
        self.supports_relay = relay_address is not None
        """Relayed media comes from ``relay_address(media_address)``: an address of a network the
        gate declares as its TURN relays (``GateConfig.turn_relays``), as a TURN server's would."""
        self.janus_api_url = janus_api_url
        self.secret = secret
        self._owner: VideoRoom | None = None
        self._stack = contextlib.AsyncExitStack()
        self._clients: dict[str, GateClient] = {}
        self._feeds: dict[str, tuple[str, str]] = {}
        """Participant id -> (room, Janus's participant id)."""
        self._listed: dict[str, frozenset[str]] = {}
        self._poller: asyncio.Task[None] | None = None

    @property
    def geofence(self) -> Geofence:
        return self.served.gate.geofence

    async def __aenter__(self) -> JanusGateHarness:
        http = await self._stack.enter_async_context(aiohttp.ClientSession())
        owner = await JanusSession.create(http, self.janus_api_url)
        self._stack.push_async_callback(owner.destroy)
        self._owner = VideoRoom(owner)
        self._poller = asyncio.ensure_future(self._poll())
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        await self._stack.aclose()

    async def _room(self, room: str) -> None:
        assert self._owner is not None
        if room not in self._listed:
            await self._owner.request({"request": "create", "room": room, "secret": self.secret})
            self._listed[room] = frozenset()

    async def _poll(self) -> None:
        assert self._owner is not None
        while True:
            for room in list(self._listed):
                with contextlib.suppress(JanusError):
                    listed = await self._owner.participants(room)  # type: ignore[arg-type]
                    self._listed[room] = frozenset(str(p["id"]) for p in listed)
            await asyncio.sleep(0.05)

    async def join(
        self,
        room: str,
        address: str,
        *,
        identity: str | None = None,
        media_address: str | None = None,
        relayed: bool = False,
        claims_relay: bool = False,
    ) -> str | None:
        await self._room(room)
        client = await self._stack.enter_async_context(gate_client(self.served.api_url, address))
        handle = await client.session.attach(PLUGIN)
        try:
            joined = await handle.message({"request": "join", "ptype": "publisher", "room": room})
        except JanusError as refused:
            if refused.code == UNAUTHORIZED:
                return None
            raise
        member = self.served.gate.members[handle.handle_id]
        self._clients[member.participant] = client
        self._feeds[member.participant] = (room, str(joined.data["id"]))
        if media_address is not None:
            if relayed:
                assert self.relay_address is not None, "this harness was given no relay addresses"
                source = self.relay_address(media_address)
            else:
                source = self.media_address(media_address)
            await self._publish(handle, member.participant, source, claims_relay)
        return member.participant

    async def _publish(
        self, handle: JanusHandle, participant: str, media_address: str, claims_relay: bool
    ) -> None:
        # The policy is taken when the transceiver's ICE connection is created: publish under it.
        with use_policy(IcePolicy(bind=(media_address,), allowed_remote=LAN_NETWORKS)):
            pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            self._stack.push_async_callback(pc.close)
            publish(pc, OpusTrack())
            await pc.setLocalDescription(await pc.createOffer())
            sdp = pc.localDescription.sdp
            if claims_relay:
                sdp = sdp.replace(" typ host", " typ relay raddr 0.0.0.0 rport 0")
            reply = await handle.message(
                {"request": "publish"}, jsep={"type": "offer", "sdp": sdp, "trickle": False}
            )
            assert reply.jsep is not None
            await pc.setRemoteDescription(RTCSessionDescription(sdp=str(reply.jsep["sdp"]), type="answer"))

        def reported() -> str | None:
            views = [v for v in self.geofence.participants() if v.participant == participant]
            if views and views[0].media_address is None:
                return "no media address reported yet"
            return None

        await eventually(reported, within=20.0)

    async def hang_up(self, room: str, participant: str) -> None:
        await self._clients[participant].session.destroy()

    def connected(self, room: str) -> frozenset[str]:
        listed = self._listed.get(room, frozenset())
        return frozenset(p for p, (r, feed) in self._feeds.items() if r == room and feed in listed)


LAN_RELAYS = "198.19.0.0/16"
"""Where :func:`lan_relay_address` puts relayed media: declare it as the gate's TURN relays."""


def lan_media_address(address: str) -> str:
    """The LAN address (198.18.0.0/15) standing in for loopback ``127.b.c.d``: ``198.18.b.d``, added to
    the namespace's dummy interface."""
    return _twin(address, 18)


def lan_relay_address(address: str) -> str:
    """The address of a declared relay (:data:`LAN_RELAYS`) relaying ``127.b.c.d``: ``198.19.b.d``."""
    return _twin(address, 19)


def _twin(address: str, second: int) -> str:
    _, b, _, d = address.split(".")
    lan = f"198.{second}.{b}.{d}"
    add_lan_address(lan)
    return lan


def lan_twins(networks: Mapping[str, str]) -> list[str]:
    """``NETWORK=CC`` assignments placing each loopback ``127.b.0.0/16`` of ``networks`` (country ->
    network), its LAN twin ``198.18.b.0/24`` and its relay twin ``198.19.b.0/24`` in the same country."""
    assignments = []
    for country, network in networks.items():
        b = network.split(".")[1]
        assignments += [f"{network}={country}", f"198.18.{b}.0/24={country}", f"198.19.{b}.0/24={country}"]
    return assignments
