"""One participant: its RTCPeerConnection, its m-lines (recycled, never removed) and its negotiations.

The server always makes the offers, one at a time: changes requested while an offer is outstanding
are folded into the next one. An m-line that stops carrying a track goes ``inactive`` and is reused
as :mod:`.mlines` decides.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiortc import (
    RTCBundlePolicy,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpTransceiver,
    RTCSessionDescription,
)

from ..protocol import KINDS, OfferedTrack, PublishSlot
from ..rtc.access import set_msid
from ..rtc.candidates import bounded_candidate_lines
from ..rtc.forwarding import ForwardingReceiver, add_forwarding_transceiver, ice_connection_of
from ..rtc.ice import IcePolicy, SelectedPair, observe_selected_pair, use_policy
from ..rtc.teardown import close_in_steps
from .consumer import Consumer
from .events import CloseReason, JoinRequest, Offer, ParticipantChannel, PeerEvent, SfuObserver
from .mlines import MLineRecycler
from .negotiation import NegotiationScheduler
from .producer import Producer
from .retransmission import (
    SUBSCRIBER_RETRANSMISSION_BURST,
    SUBSCRIBER_RETRANSMISSIONS_PER_SECOND,
    RetransmissionBudget,
)

logger = logging.getLogger(__name__)


class WrongState(Exception):
    """A client message that is valid but not expected now (e.g. an answer with no offer outstanding)."""


class InvalidAnswer(Exception):
    """The client's answer could not be applied; the session cannot continue."""


class AnswerTooLarge(InvalidAnswer):
    """The answer is larger than any real client's answer to that offer (:func:`max_answer_bytes`)."""


ANSWER_BASE_BYTES = 4096
"""Session part of an answer, with room for a dozen candidates (about 100 bytes each)."""
ANSWER_BYTES_PER_MEDIA = 2048
"""Per media section of the offer. Measured on loopback: Chromium 156 answered 2 sections with
2 133 bytes and each further one with about 805; aiortc 1.16.0 with about 1 480 per section (its
candidates repeated in each). A 1 500-candidate answer (78 KB) to 2 sections is refused before it
is parsed."""


def max_answer_bytes(media_sections: int) -> int:
    """The largest answer accepted to an offer of ``media_sections`` m-lines."""
    return ANSWER_BASE_BYTES + ANSWER_BYTES_PER_MEDIA * media_sections


TEARDOWN_DELAY_S = 0.1
"""From a removal to the first step of its connection's teardown (see :meth:`Participant._tear_down`)."""
TEARDOWN_SPACING_S = 0.02
"""Between two steps of a removed connection's teardown: 17 steps (16 transceivers and the close) of a
participant of a room of 9 take 0.4 s, each 0.2-0.6 ms of loop."""

CloseRequest = Callable[["Participant", CloseReason, str], None]
"""How a participant asks its owner to remove it (a failed connection, an unanswered offer)."""


class Participant:
    """One client of a room; owns one RTCPeerConnection, its producers and its consumers."""

    def __init__(
        self,
        request: JoinRequest,
        publish: frozenset[str],
        channel: ParticipantChannel,
        ice_policy: IcePolicy,
        observer: SfuObserver,
        request_close: CloseRequest,
        announce: Callable[[Producer], None],
        scheduler: NegotiationScheduler,
        negotiation_timeout: float,
        connect_timeout: float = 15.0,
        fold_retirements: bool = True,
    ) -> None:
        self.id = request.participant_id
        self.room_name = request.room
        self.name = request.name
        self.address = request.address
        """Signaling remote address: for operators and the geofence, never sent to other participants."""
        self.identity = request.identity
        self.app_data: dict[str, Any] = {}
        self.channel = channel
        self.closed = False
        self.join_complete = False
        """Its media connection has come up (it may have failed since), or there was nothing to
        negotiate when it joined: see :meth:`SfuObserver.join_completed`."""
        self.selected_pair: SelectedPair | None = None
        self.producers: dict[str, Producer] = {}
        """This participant's publications by kind; live (forwarded) once the first answer is applied."""
        self.consumers: dict[str, Consumer] = {}
        """What this participant receives, by producer id."""
        self.published = False
        self._observer = observer
        self._request_close = request_close
        self._publish = announce
        """Announces a negotiated producer to the room so that others subscribe to it."""
        self._closing: asyncio.Future[None] | None = None
        self._negotiation_timeout = negotiation_timeout
        self._connect_timeout = connect_timeout
        self._connect_timer: asyncio.TimerHandle | None = None
        self._scheduler = scheduler
        self._fold_retirements = fold_retirements
        """See :attr:`SfuConfig.fold_retirements`."""
        self._ice_policy = ice_policy
        self._retransmissions = RetransmissionBudget(
            SUBSCRIBER_RETRANSMISSIONS_PER_SECOND, SUBSCRIBER_RETRANSMISSION_BURST
        )
        """What NACKs may buy from all of this participant's consumers together."""
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
        self._publications: list[RTCRtpTransceiver] = []
        for kind in KINDS:
            if kind in publish:
                transceiver = self._add_transceiver(kind, "recvonly")
                receiver = transceiver.receiver
                assert isinstance(receiver, ForwardingReceiver)
                self.producers[kind] = Producer(self.id, self.name, kind, transceiver, receiver)
                self._publications.append(transceiver)
        self._offers_made = 0
        self.m_lines: MLineRecycler[RTCRtpTransceiver] = MLineRecycler()
        """Which of its send m-lines went inactive, and which a new subscription may take."""
        self._pending: list[tuple[Consumer, int]] = []
        self._dirty = False
        self._urgent = False
        """Whether the offer due holds a new subscription (else it only retires m-lines: deferred)."""
        self._answer: asyncio.Future[None] | None = None
        self._answer_timer: asyncio.TimerHandle | None = None
        self._answering_offer = 0
        self._observing_ice = False
        self.pc.on("connectionstatechange", self._connection_state_changed)

    def __repr__(self) -> str:
        return f"Participant({self.id!r}, room={self.room_name!r})"

    @property
    def awaiting_answer(self) -> bool:
        return self._answer is not None and not self._answer.done()

    # subscriptions -------------------------------------------------------------------------------

    def subscribe(self, producer: Producer) -> Consumer | None:
        """Start receiving ``producer`` (from the next negotiation on)."""
        if self.closed or producer.closed or producer.id in self.consumers:
            return None
        transceiver = self._take_slot(producer.kind)
        # One remote stream per publisher, one track id per producer: a browser groups the tracks by
        # publisher and sees a recycled m-line carry a new track (``a=msid``).
        set_msid(transceiver.sender, producer.participant_id, producer.id)
        consumer = Consumer(producer, self.id, transceiver, self._retransmissions)
        self.consumers[producer.id] = consumer
        self._pending.append((consumer, self._offers_made))
        self._observer.consumer_added(consumer)
        self.request_renegotiation()
        return consumer

    def unsubscribe(self, producer_id: str) -> None:
        """Stop receiving a producer; its m-line goes inactive and is recycled later."""
        consumer = self.consumers.pop(producer_id, None)
        if consumer is None:
            return
        consumer.close()
        self._pending = [(c, g) for c, g in self._pending if c is not consumer]
        self._observer.consumer_closed(consumer)
        if self.closed:
            return
        consumer.transceiver.direction = "inactive"
        self.m_lines.retire(consumer.transceiver, self._offers_made)
        # Its packets stopped with consumer.close(); telling the client can wait (deferred).
        self.request_renegotiation(deferred=True)

    def _take_slot(self, kind: str) -> RTCRtpTransceiver:
        transceiver = self.m_lines.take(kind)
        if transceiver is None:
            return self._add_transceiver(kind, "sendonly")
        transceiver.direction = "sendonly"
        return transceiver

    def _add_transceiver(self, kind: str, direction: str) -> RTCRtpTransceiver:
        # The first transceiver creates the (bundled) ICE connection, which reads the policy.
        with use_policy(self._ice_policy):
            return add_forwarding_transceiver(self.pc, kind, direction)

    # negotiation ---------------------------------------------------------------------------------

    def request_renegotiation(self, *, deferred: bool = False) -> None:
        """Make (or fold into) the next offer; ``deferred`` when nothing waits on it (see
        :mod:`.negotiation`)."""
        if self.closed:
            return
        self._dirty = True
        self._urgent = self._urgent or not deferred
        if not self.awaiting_answer:
            self._schedule_due()

    def _schedule_due(self) -> None:
        """Queue the offer due: urgent, deferred, or none yet when it only retires m-lines and those
        retirements ride on the next offer due for another reason (``fold_retirements``)."""
        if self._urgent:
            self._scheduler.schedule(self)
        elif not self._fold_retirements:
            self._scheduler.schedule(self, deferred=True)

    async def make_offer(self) -> None:
        """Called by the scheduler: create, apply and send an offer if one is due."""
        if self.closed or not self._dirty or self.awaiting_answer:
            return
        self._dirty = self._urgent = False
        if not self.pc.getTransceivers():
            self._complete_join()  # nothing to negotiate yet (no publication, nobody to receive)
            return
        # Number the offer before awaiting anything: a subscription made while this offer is created
        # (the first setLocalDescription gathers ICE, and yields) may be missing from it, so it must
        # wait for the answer to the next offer, not to this one.
        self._offers_made += 1
        offer_number = self._offers_made
        try:
            await self.pc.setLocalDescription(await self.pc.createOffer())
        except Exception as exc:
            if not self.closed:
                logger.exception("creating an offer failed for %s", self.id)
                self._request_close(self, CloseReason.PROTOCOL_ERROR, f"negotiation failed: {exc}")
            return
        if self.closed:
            return
        self._observe_ice()
        loop = asyncio.get_running_loop()
        self._answer = loop.create_future()
        self._answering_offer = offer_number
        self._answer_timer = loop.call_later(self._negotiation_timeout, self._answer_timed_out)
        self.channel.send_offer(self._describe(self.pc.localDescription.sdp))

    def _answer_timed_out(self) -> None:
        if self.awaiting_answer and not self.closed:
            self._request_close(
                self,
                CloseReason.NEGOTIATION_TIMEOUT,
                f"no answer to the offer within {self._negotiation_timeout:g} s",
            )

    def _describe(self, sdp: str) -> Offer:
        tracks = tuple(
            OfferedTrack(
                mid=consumer.transceiver.mid,
                participant=consumer.producer.participant_id,
                name=consumer.producer.participant_name,
                kind=consumer.kind,
                producer=consumer.producer.id,
            )
            for consumer in self.consumers.values()
            if consumer.transceiver.mid is not None
        )
        publish = tuple(PublishSlot(t.mid, t.kind) for t in self._publications if t.mid is not None)
        return Offer(sdp=sdp, tracks=tracks, publish=publish)

    async def handle_answer(self, sdp: str) -> None:
        """Apply the client's answer to the outstanding offer, in its negotiation turn.

        Raises :class:`WrongState` if no offer is outstanding and :class:`InvalidAnswer` if the
        answer cannot be applied.
        """
        answer = self._answer
        if self.closed or answer is None or answer.done():
            raise WrongState("no offer is awaiting an answer")
        self._require_real_size(sdp)
        sdp = bounded_candidate_lines(sdp, self._ice_policy.limits.remote_candidates)
        _require_fingerprints(sdp)
        async with self._scheduler.turn():
            if self.closed or answer.done():
                return  # closed (or timed out) while waiting for the turn
            try:
                await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
            except Exception as exc:
                raise InvalidAnswer(str(exc) or type(exc).__name__) from exc
        if self.closed:
            return
        if self._answer_timer is not None:
            self._answer_timer.cancel()
        if self._connect_timer is None and self.pc.connectionState != "connected":
            self._connect_timer = asyncio.get_running_loop().call_later(
                self._connect_timeout, self._connect_timed_out
            )
        self._after_answer(self._answering_offer)
        if not answer.done():
            answer.set_result(None)
        if self._dirty:
            self._schedule_due()

    def _require_real_size(self, sdp: str) -> None:
        offer = self.pc.localDescription
        sections = 0 if offer is None else offer.sdp.count("\nm=")
        try:
            size = len(sdp.encode())
        except UnicodeEncodeError:  # "\ud800": JSON carries it, UTF-8 (and so any SDP) cannot
            raise InvalidAnswer("the answer is not valid Unicode (it has a lone surrogate)") from None
        limit = max_answer_bytes(sections)
        if size > limit:
            raise AnswerTooLarge(f"{size} bytes answering {sections} media sections (at most {limit})")

    def _after_answer(self, offer_number: int) -> None:
        self.m_lines.answered(offer_number)
        ready = [(c, g) for c, g in self._pending if g < offer_number]
        self._pending = [(c, g) for c, g in self._pending if g >= offer_number]
        for consumer, _ in ready:
            consumer.activate()
        if not self.published:
            self.published = True
            for producer in self.producers.values():
                self._publish(producer)

    # media address -------------------------------------------------------------------------------

    def _observe_ice(self) -> None:
        if self._observing_ice:
            return
        connection = ice_connection_of(self.pc)
        if connection is None:
            return
        self._observing_ice = True
        observe_selected_pair(connection, self._selected_pair_changed)

    def _selected_pair_changed(self, pair: SelectedPair) -> None:
        if self.closed:
            return
        self.selected_pair = pair
        self._observer.selected_pair_changed(self, pair)

    def _connect_timed_out(self) -> None:
        if not self.closed and self.pc.connectionState != "connected":
            self._request_close(
                self,
                CloseReason.DISCONNECTED,
                f"no media connection within {self._connect_timeout:g} s of the answer",
            )

    def _complete_join(self) -> None:
        if not self.join_complete and not self.closed:
            self.join_complete = True
            self._observer.join_completed(self)

    def _connection_state_changed(self) -> None:
        if self.pc.connectionState == "connected":
            if self._connect_timer is not None:
                self._connect_timer.cancel()
            self._complete_join()
        if not self.closed and self.pc.connectionState == "failed":
            self._request_close(self, CloseReason.DISCONNECTED, "media connection failed")

    # events and closing --------------------------------------------------------------------------

    def send_event(self, event: PeerEvent) -> None:
        if not self.closed:
            self.channel.send_event(event)

    def close(self, reason: CloseReason, detail: str) -> asyncio.Future[None]:
        """Close this participant's session and connection (idempotent).

        The bookkeeping is synchronous; the returned future completes when the peer connection is
        closed. Producers are closed by the room (their consumers live in other participants).
        """
        if self._closing is not None:
            return self._closing
        self.closed = True
        if self._answer_timer is not None:
            self._answer_timer.cancel()
        if self._connect_timer is not None:
            self._connect_timer.cancel()
        if self._answer is not None and not self._answer.done():
            self._answer.cancel()
        for producer_id in list(self.consumers):
            self.unsubscribe(producer_id)
        self.channel.end(reason, detail)
        paced = reason is not CloseReason.SHUTDOWN  # at a shutdown nobody stays to be disturbed
        self._closing = asyncio.ensure_future(self._tear_down(paced))
        return self._closing

    async def _tear_down(self, paced: bool) -> None:
        """Close the peer connection a step at a time, each step in a negotiation turn of its own.

        ``RTCPeerConnection.close()`` stops every transceiver (cancelling its tasks, sending RTCP BYE)
        and then the transports in one go: 8-11 ms of loop for a participant of a room of 9 (16
        transceivers), a gap in everyone else's media right after an ejection (issue 12). Its media
        already stopped (its producers and consumers closed), so nothing waits on the rest: each
        transceiver is stopped in a turn, the sockets read in between, and the now-short close last.
        ``paced``, the steps also wait: :data:`TEARDOWN_DELAY_S` before the first (out of the
        removal's own moment: the policy change, the closes, the others' ``participant-left``), then
        :data:`TEARDOWN_SPACING_S` between two, so that they never add up to a stall of anyone's media.
        """
        await close_in_steps(
            self.pc,
            delay=TEARDOWN_DELAY_S if paced else 0.0,
            spacing=TEARDOWN_SPACING_S if paced else 0.0,
            turn=self._scheduler.turn,
        )


def _require_fingerprints(sdp: str) -> None:
    """Refuse an answer whose media has no DTLS fingerprint.

    aiortc accepts it, then its connection task fails an assertion and the connection never reaches
    "failed": the participant would stay, connected to nothing, until it leaves. Checked by scanning
    the lines as aiortc reads them (session-level ``a=fingerprint``/``a=setup`` apply to every
    m-line): a full parse here cost as much as the one ``setRemoteDescription`` makes anyway.
    """
    session = _DtlsLines()
    sections: list[_DtlsLines] = []
    current = session
    for line in sdp.splitlines():
        if line.startswith("m="):
            parts = line[2:].split()
            current = _DtlsLines(label=parts[0] if parts else "?", used=len(parts) < 2 or parts[1] != "0")
            sections.append(current)
        elif line.startswith("a=fingerprint:"):
            current.fingerprint = True
        elif line.startswith("a=setup:"):
            current.setup = True
        elif line.startswith("a=mid:"):
            current.label = line[6:].strip() or current.label
    for media in sections:
        has_setup = media.setup or session.setup
        has_fingerprint = media.fingerprint or session.fingerprint
        if media.used and not (has_setup and has_fingerprint):
            raise InvalidAnswer(f"m-line {media.label} has no DTLS fingerprint (a=fingerprint)")


@dataclass
class _DtlsLines:
    """What one SDP section (or the session part) says about DTLS."""

    label: str = ""
    """The m-line's ``a=mid``, else its kind."""
    used: bool = True
    """Not rejected (port 0)."""
    fingerprint: bool = False
    setup: bool = False
