"""The real SFU keeps the geofence's host contract (docs/plugin.md), driven by real clients.

Every participant is a :class:`SyntheticPeer` whose WebSocket comes from its own loopback address in the
contract database's ranges, so it really arrives from that country. Participants given a media address
publish audio with ICE bound to that address: the SFU reports the pair ICE really selected. A relayed
participant offers only the relayed candidate of a real TURN server (coturn on loopback), so its media
really reaches the SFU from the relay's address. Identities are vouched for as a deployment's
authentication middleware would (here: by the client's address).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.typedefs import Handler

from sfu_geofence.core.audit import EventKind
from sfu_geofence.core.contract import CONTRACT_VERSION
from sfu_geofence.core.geofence import Geofence
from sfu_geofence.server import IDENTITY, ServerConfig, create_geofenced_app
from sfu_geofence.synthetic.client import SyntheticPeer, synthetic_tracks
from sfu_geofence.testing.ci import skip_or_fail
from sfu_geofence.testing.coturn import COTURN_MISSING, TurnServer, find_turnserver
from sfu_geofence.testing.host_contract import WITHIN, HostContract
from sfu_geofence.testing.sdp import relabel_as_relay
from sfu_geofence.testing.server import Served, app_on_loopback
from sfu_geofence.testing.wait import eventually


class SfuHarness:
    """The HostHarness over a served, geofenced SFU."""

    contract_version = CONTRACT_VERSION
    supports_relay = True  # through a real coturn

    def __init__(self, served: Served, identities: dict[str, str], turn: TurnServer | None) -> None:
        self.served = served
        self._turn = turn
        self._identities = identities
        self.peers: dict[str, SyntheticPeer] = {}
        self._refused: list[SyntheticPeer] = []

    @property
    def geofence(self) -> Geofence:
        return self.served.geofence

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
        if identity is not None:
            self._identities[address] = identity
        tracks = synthetic_tracks()[:1] if media_address is not None else []
        peer = SyntheticPeer(
            self.served.url,
            room,
            address,
            tracks=tracks,
            media_address=media_address,
            ice_servers=[self.turn().ice_server()] if relayed else [],
            relay_only=relayed,
            rewrite_answer=relabel_as_relay if claims_relay else None,
        )
        await peer.join(within=WITHIN)
        if peer.participant_id is None:
            self._refused.append(peer)
            await eventually(
                lambda: None if peer.closed.is_set() else "refused but not closed", within=WITHIN
            )
            assert peer.close_code == 4403, peer.messages
            return None
        participant = peer.participant_id
        self.peers[participant] = peer
        if media_address is not None:

            def reported() -> str | None:
                if participant not in self.served.sfu.participants:
                    return None  # ejected already: the media address was reported
                events = self.geofence.audit.events(participant=participant, kind=EventKind.MEDIA)
                return None if events else f"no media address reported for {participant} yet"

            await eventually(reported, within=WITHIN)
        return participant

    def turn(self) -> TurnServer:
        """The test's coturn (a machine without one runs every case but the relayed one)."""
        if self._turn is None:
            skip_or_fail(COTURN_MISSING, kind="relay")
        return self._turn

    async def hang_up(self, room: str, participant: str) -> None:
        await self.peers[participant].close()

    def connected(self, room: str) -> frozenset[str]:
        sfu = self.served.sfu
        in_room = set(sfu.rooms[room].participants) if room in sfu.rooms else set()
        return frozenset(in_room | {pid for pid, p in sfu.participants.items() if p.room_name == room})

    async def close(self) -> None:
        for peer in [*self.peers.values(), *self._refused]:
            await peer.close()


def vouch_by_address(identities: dict[str, str]) -> web.Middleware:
    """Stands for a deployment's authentication: sets the identity of a ``/ws`` request."""

    @web.middleware
    async def vouch(request: web.Request, handler: Handler) -> web.StreamResponse:
        identity = identities.get(request.remote or "")
        if identity is not None:
            request[IDENTITY] = identity
        return await handler(request)

    return vouch


class TestTheSfuKeepsTheHostContract(HostContract):
    @pytest.fixture
    async def harness(
        self, contract_database: Path, request: pytest.FixtureRequest
    ) -> AsyncIterator[SfuHarness]:
        # Started before the harness, so stopped after its peers have closed their allocations.
        turn = request.getfixturevalue("turn_server") if find_turnserver() else None
        identities: dict[str, str] = {}
        # The operator declares coturn's relay address: only media from there counts as relayed.
        relays = () if turn is None else (turn.relay_network,)
        app = create_geofenced_app(ServerConfig(db_path=str(contract_database), turn_relays=relays))
        app.middlewares.append(vouch_by_address(identities))
        async with app_on_loopback(app) as served:
            harness = SfuHarness(served, identities, turn)
            try:
                yield harness
            finally:
                with contextlib.suppress(Exception):
                    await harness.close()
