"""The smallest complete host of the geofence: rooms of participant sessions, and no media.

It is a legitimate host, not a mock: it keeps every promise of the contract (admit before
allocating, report the media address, close only the ejected participant and then call leave,
never block in the eject callable), so the host-contract suite runs against it as it runs against
the real SFU. It also shows an SFU author the few lines the contract asks for.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from pathlib import Path

from ..core.audit import AuditLog
from ..core.contract import CONTRACT_VERSION
from ..core.geofence import EjectRequest, Geofence
from ..core.policystore import PolicyStore


@dataclass
class Session:
    """What a host allocates for an admitted participant (here: nothing but this record)."""

    room: str
    participant: str
    address: str
    closed_because: list[str] = field(default_factory=list)


class ReferenceHost:
    """An in-process host: ``join`` stands for a signaling request, ``hang_up`` for a peer leaving."""

    contract_version = CONTRACT_VERSION
    supports_relay = True

    def __init__(
        self,
        database: str | Path | None = None,
        *,
        policies: PolicyStore | None = None,
        audit: AuditLog | None = None,
    ) -> None:
        self._geofence = Geofence(self._eject, database=database, policies=policies, audit=audit)
        self._rooms: dict[str, dict[str, Session]] = {}
        self._ids = itertools.count(1)
        self.closed: list[tuple[str, str, str]] = []
        """Every session this host closed because of an eject request: (room, participant, reason)."""

    @property
    def geofence(self) -> Geofence:
        return self._geofence

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
        participant = f"p{next(self._ids)}"  # unique per session: a rejoin is a new participant
        decision = self._geofence.admit(room, participant, address, identity)
        if not decision.admitted:
            return None  # refused before anything is allocated
        self._rooms.setdefault(room, {})[participant] = Session(room, participant, address)
        if media_address is not None:
            await asyncio.sleep(0)  # ICE completes later than signaling
            if participant in self._rooms.get(room, {}):
                self._geofence.media_address(room, participant, media_address, relayed)
        return participant

    async def hang_up(self, room: str, participant: str) -> None:
        self._close(room, participant)

    def connected(self, room: str) -> frozenset[str]:
        return frozenset(self._rooms.get(room, {}))

    def _eject(self, request: EjectRequest) -> None:
        # Never block or re-enter here: schedule the close, as a real host closes a peer connection.
        asyncio.get_running_loop().call_soon(
            self._close, request.room, request.participant, str(request.trigger)
        )

    def _close(self, room: str, participant: str, reason: str | None = None) -> None:
        session = self._rooms.get(room, {}).pop(participant, None)
        if session is None:
            return
        if reason is not None:
            self.closed.append((room, participant, reason))
        self._geofence.leave(room, participant)

    async def close(self) -> None:
        for room, sessions in list(self._rooms.items()):
            for participant in list(sessions):
                self._close(room, participant)
        self._geofence.close()
