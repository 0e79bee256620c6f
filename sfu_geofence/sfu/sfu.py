"""The SFU: rooms by name, admission, and removing one participant without disturbing the others."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from ..rtc.ice import IcePolicy
from .events import AdmissionHook, CloseReason, JoinRequest, Observers, ParticipantChannel, SfuObserver
from .negotiation import NegotiationScheduler
from .participant import Participant
from .room import Room

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SfuConfig:
    """How the media plane behaves."""

    ice: IcePolicy = field(default_factory=IcePolicy)
    """Addresses ICE gathers on and remote ranges it talks to."""

    negotiation_timeout: float = 15.0
    """Seconds a client has to answer an offer before it is removed."""

    connect_timeout: float = 15.0
    """Seconds from the first answer to a connected ICE/DTLS connection before the client is removed:
    a connection that never comes up (no usable candidate, a DTLS handshake that cannot complete)
    does not always fail in aiortc, and would leave a ghost participant."""

    max_participants_per_room: int = 64

    fold_retirements: bool = True
    """Make no offer that would only retire m-lines (someone left or was ejected: their media stopped
    at once, the others were told ``participant-left``): the lines go ``inactive`` in each remaining
    participant's next offer due for another reason (a join's subscription) and are reused one join
    later. An offer of its own costs every remaining client an answer, and the SFU an offer and an
    answer, in the moment after a removal: in bench.ejection those seven renegotiations were what
    stretched the remaining tracks' largest gap (issue 12). False (``serve --renegotiate-on-leave``):
    each remaining participant gets a deferred offer (:mod:`.negotiation`) within the next 0.5 s."""


class Refused(Exception):
    """The join was refused (by the admission hook or a limit); ``reason`` goes to that client only."""

    def __init__(self, reason: str, *, by_policy: bool, internal: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.by_policy = by_policy
        self.internal = internal
        """The admission hook could not decide: a server fault, not a refusal."""


class Sfu:
    """Rooms of participants forwarding RTP to each other."""

    def __init__(
        self,
        config: SfuConfig | None = None,
        admission: AdmissionHook | None = None,
        observers: Iterable[SfuObserver] = (),
    ) -> None:
        self.config = config or SfuConfig()
        self.admission = admission
        """Called before anything is allocated for a joining participant; may refuse."""
        self.admission_ready: Callable[[], Awaitable[None]] | None = None
        """Awaited by signaling before a join reaches :meth:`join` (the geofence's
        :meth:`~sfu_geofence.core.geofence.Geofence.ready`: a cluster node catching up first)."""
        self.observer = Observers(list(observers))
        """Add :class:`SfuObserver` instances to ``observer.observers`` to follow what happens."""
        self.rooms: dict[str, Room] = {}
        self.participants: dict[str, Participant] = {}
        self._closing: set[asyncio.Future[None]] = set()
        self.negotiations = NegotiationScheduler()
        """Whose :meth:`~NegotiationScheduler.turn` every offer, answer and teardown step takes."""
        self.joins_admitted = 0
        self.refusals: dict[str, int] = {}
        """Refused joins by :attr:`Refusal.code` (``room_full`` for a full room), for the metrics."""

    def new_participant_id(self) -> str:
        """A random id: sequential ids would let a participant count the joins (refused ones included)
        between its own and another's. 96 random bits make a repeat over the process's life
        negligible, so only live participants are checked: no set of every id ever issued grows
        with (refused) attempts."""
        while True:
            participant_id = f"p{secrets.token_urlsafe(12)}"
            if participant_id not in self.participants:
                return participant_id

    def join(
        self,
        room: str,
        name: str,
        address: str,
        channel: ParticipantChannel,
        publish: Iterable[str] = ("audio", "video"),
        identity: str | None = None,
    ) -> Participant:
        """Admit and allocate a participant, or raise :class:`Refused` having allocated nothing.

        The first offer goes out through ``channel`` shortly after.
        """
        request = JoinRequest(
            room=room, participant_id=self.new_participant_id(), address=address, name=name, identity=identity
        )
        existing = self.rooms.get(room)
        # The limit first: an admitted participant must be one the SFU really allocates (the hook
        # may register it, e.g. the geofence until it leaves).
        if existing is not None and len(existing.participants) >= self.config.max_participants_per_room:
            self._count_refusal("room_full")
            raise Refused("the room is full", by_policy=False)
        if self.admission is not None:
            refusal = self.admission(request)
            if refusal is not None:
                self._count_refusal(refusal.code)
                raise Refused(refusal.reason, by_policy=not refusal.internal, internal=refusal.internal)
        the_room = existing or self.rooms.setdefault(room, Room(room, self.observer))
        try:
            participant = self._allocate(request, publish, channel, the_room)
        except Exception:
            # Admitted but not allocated: the admission hook registered it (the geofence does), so it
            # must hear that it left; a room created for it must not stay behind.
            if the_room.empty and self.rooms.get(room) is the_room:
                del self.rooms[room]
            self.observer.join_abandoned(request)
            raise
        self.participants[participant.id] = participant
        self.joins_admitted += 1
        self.observer.participant_joined(participant)
        the_room.add(participant)
        return participant

    def _count_refusal(self, code: str) -> None:
        self.refusals[code] = self.refusals.get(code, 0) + 1

    def _allocate(
        self, request: JoinRequest, publish: Iterable[str], channel: ParticipantChannel, the_room: Room
    ) -> Participant:
        return Participant(
            request,
            publish=frozenset(publish),
            channel=channel,
            ice_policy=self.config.ice,
            observer=self.observer,
            request_close=self._close_requested,
            announce=the_room.announce,
            scheduler=self.negotiations,
            negotiation_timeout=self.config.negotiation_timeout,
            connect_timeout=self.config.connect_timeout,
            fold_retirements=self.config.fold_retirements,
        )

    def remove_participant(self, participant_id: str, reason: CloseReason, detail: str = "") -> bool:
        """Remove one participant, and nothing else; idempotent (False if it is already gone).

        The participant is told ``detail`` (and only it is); its connection, its producers and every
        subscriber's consumers of them close; the others see "participant-left" (and renegotiate
        only with :attr:`SfuConfig.fold_retirements` off). The connection's teardown is paced
        (:meth:`Participant.close`), but at a shutdown.
        """
        participant = self.participants.pop(participant_id, None)
        if participant is None:
            return False
        room = self.rooms.get(participant.room_name)
        closing = participant.close(reason, detail)
        self._closing.add(closing)
        closing.add_done_callback(self._closing.discard)
        if room is not None:
            room.remove(participant)
            if room.empty:
                del self.rooms[room.name]
        self.observer.participant_left(participant, reason, detail)
        return True

    def _close_requested(self, participant: Participant, reason: CloseReason, detail: str) -> None:
        self.remove_participant(participant.id, reason, detail)

    def participant(self, participant_id: str) -> Participant | None:
        return self.participants.get(participant_id)

    async def close(self) -> None:
        """Close every participant and wait for their connections to close."""
        for participant_id in list(self.participants):
            self.remove_participant(participant_id, CloseReason.SHUTDOWN, "the server is shutting down")
        await self.negotiations.close()
        await self.drain()

    async def drain(self) -> None:
        """Wait until every connection being closed is closed."""
        while self._closing:
            await asyncio.gather(*list(self._closing), return_exceptions=True)
