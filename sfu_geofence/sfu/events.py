"""Values that cross the SFU's boundary: join requests, refusals, close reasons, offers, observers."""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from ..protocol import OfferedTrack, PublishSlot

if TYPE_CHECKING:
    from ..rtc.ice import SelectedPair
    from .consumer import Consumer
    from .participant import Participant
    from .producer import Producer

logger = logging.getLogger(__name__)


class CloseReason(enum.Enum):
    """Why a participant's session ended; the edge maps each to the close code the client sees."""

    LEFT = "left"
    """The client said goodbye."""
    DISCONNECTED = "disconnected"
    """The signaling connection or the media connection was lost (a vanished peer)."""
    EJECTED = "ejected"
    """Removed by policy or by an operator (:meth:`Sfu.remove_participant`)."""
    PROTOCOL_ERROR = "protocol-error"
    """The client broke the protocol in a way that leaves its session unusable (e.g. an invalid answer)."""
    NEGOTIATION_TIMEOUT = "negotiation-timeout"
    """The client did not answer an offer in time."""
    SHUTDOWN = "shutdown"
    """The server is stopping."""
    INTERNAL_ERROR = "internal-error"
    """A server fault ended the session (a bug, or a join the server could not decide on)."""


@dataclass(frozen=True)
class JoinRequest:
    """What the admission hook sees, before anything is allocated for the participant."""

    room: str
    participant_id: str
    """Assigned by the SFU: 96 random bits, never the id of a live participant."""
    address: str
    """The signaling connection's remote IP address."""
    name: str
    """Display name chosen by the client (shown to other participants)."""
    identity: str | None = None
    """An authenticated identity, if the edge has one."""


@dataclass(frozen=True)
class Refusal:
    """An admission hook's "no"; ``reason`` is sent to the refused client only."""

    reason: str
    internal: bool = False
    """The hook could not decide (a server fault), so this is no refusal by policy: the client is told
    of an internal error (4500) instead."""
    code: str = "refused"
    """Why, for operators' counts (metrics): one of a few fixed words (e.g. a decision's reason),
    never anything the client chose."""


AdmissionHook = Callable[[JoinRequest], Refusal | None]
"""Called once per join, synchronously, before any allocation; returns None to admit."""


@dataclass(frozen=True)
class Offer:
    """A server-made SDP offer and the map of its m-lines (the protocol's own values: the edge sends
    them as they are)."""

    sdp: str
    tracks: tuple[OfferedTrack, ...]
    """Which send m-line carries whose media."""
    publish: tuple[PublishSlot, ...] = ()
    """The m-lines on which the server expects the client's own media."""


@dataclass(frozen=True)
class PeerEvent:
    """Another participant joined or left; ids and display names only, never addresses or places."""

    type: str
    """``participant-joined`` or ``participant-left``."""
    participant: str
    name: str


class ParticipantChannel(Protocol):
    """How the SFU talks to one client; implemented by the signaling edge. Calls never block."""

    def send_offer(self, offer: Offer) -> None:
        """Deliver an offer; the client answers through :meth:`Participant.handle_answer`."""

    def send_event(self, event: PeerEvent) -> None:
        """Deliver a room event."""

    def end(self, reason: CloseReason, detail: str) -> None:
        """The session is over: tell the client why (``detail`` only to this client) and close."""


class SfuObserver:
    """Subclass and override what you need (mediasoup's ``observer``); every call is synchronous.

    Calls arrive in order: ``participant_joined`` before any of its producers, ``participant_left``
    after all of its producers and consumers closed.
    """

    def participant_joined(self, participant: Participant) -> None:
        """Admitted and allocated; no media yet."""

    def join_completed(self, participant: Participant) -> None:
        """Its join is no longer in progress: its media connection (ICE and DTLS) came up for the
        first time, or its first negotiation found nothing to negotiate (nothing to publish, nobody
        to receive yet: no peer connection sockets to wait for)."""

    def participant_left(self, participant: Participant, reason: CloseReason, detail: str) -> None:
        """Gone, for whatever reason, with everything it owned."""

    def join_abandoned(self, request: JoinRequest) -> None:
        """Admitted, but allocating the participant failed: it never joined (forget what admission kept)."""

    def producer_added(self, producer: Producer) -> None:
        """A publication was negotiated; subscriptions to it follow."""

    def producer_closed(self, producer: Producer) -> None:
        """A publication ended (its consumers are already closed)."""

    def consumer_added(self, consumer: Consumer) -> None:
        """A forwarding of a producer to one subscriber was created."""

    def consumer_closed(self, consumer: Consumer) -> None:
        """A forwarding ended."""

    def selected_pair_changed(self, participant: Participant, pair: SelectedPair) -> None:
        """ICE nominated a pair for the participant's media, or switched to another one.

        The remote address here is where media really comes from (a relay's if ``pair.relayed``);
        the geofence (``server.enforcement.GeofenceHost``) re-checks it against the room's policy.
        """


@dataclass
class Observers(SfuObserver):
    """Fans every observer call out to a list of observers, each isolated from the others.

    Observers are called in the middle of the SFU's bookkeeping (a removal calls ``consumer_closed``
    and ``participant_left`` while it works): one that raises is logged and must not leave a
    participant half-removed, nor stop the other observers from hearing the event.
    """

    observers: list[SfuObserver] = field(default_factory=list)

    def _notify(self, event: str, call: Callable[[SfuObserver], None]) -> None:
        for o in list(self.observers):
            try:
                call(o)
            except Exception:
                logger.exception("observer %r failed on %s", o, event)

    def participant_joined(self, participant: Participant) -> None:
        self._notify("participant_joined", lambda o: o.participant_joined(participant))

    def join_completed(self, participant: Participant) -> None:
        self._notify("join_completed", lambda o: o.join_completed(participant))

    def participant_left(self, participant: Participant, reason: CloseReason, detail: str) -> None:
        self._notify("participant_left", lambda o: o.participant_left(participant, reason, detail))

    def join_abandoned(self, request: JoinRequest) -> None:
        self._notify("join_abandoned", lambda o: o.join_abandoned(request))

    def producer_added(self, producer: Producer) -> None:
        self._notify("producer_added", lambda o: o.producer_added(producer))

    def producer_closed(self, producer: Producer) -> None:
        self._notify("producer_closed", lambda o: o.producer_closed(producer))

    def consumer_added(self, consumer: Consumer) -> None:
        self._notify("consumer_added", lambda o: o.consumer_added(consumer))

    def consumer_closed(self, consumer: Consumer) -> None:
        self._notify("consumer_closed", lambda o: o.consumer_closed(consumer))

    def selected_pair_changed(self, participant: Participant, pair: SelectedPair) -> None:
        self._notify("selected_pair_changed", lambda o: o.selected_pair_changed(participant, pair))
