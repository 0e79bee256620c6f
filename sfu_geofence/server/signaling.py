"""The WebSocket signaling endpoint: one session per connection, one participant per session."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Protocol

from aiohttp import WSMsgType, web

from ..protocol import (
    Answer,
    CloseCode,
    ClosingMessage,
    EjectedMessage,
    ErrorCode,
    ErrorMessage,
    IceServer,
    Join,
    Joined,
    Leave,
    OfferMessage,
    ParticipantJoined,
    ParticipantLeft,
    ProtocolError,
    Redirect,
    RefusedMessage,
    ServerMessage,
    encode,
    parse_client_message,
)
from ..sfu import (
    AnswerTooLarge,
    CloseReason,
    InvalidAnswer,
    Offer,
    Participant,
    PeerEvent,
    Refused,
    Sfu,
    WrongState,
)
from .caps import AdmissionGate

logger = logging.getLogger(__name__)

INTERNAL_ERROR = CloseReason.INTERNAL_ERROR.value

CLOSE_CODE_FOR_REASON: dict[CloseReason, CloseCode] = {
    CloseReason.LEFT: CloseCode.NORMAL,
    CloseReason.SHUTDOWN: CloseCode.GOING_AWAY,
    CloseReason.DISCONNECTED: CloseCode.DISCONNECTED,
    CloseReason.EJECTED: CloseCode.EJECTED,
    CloseReason.NEGOTIATION_TIMEOUT: CloseCode.TIMEOUT,
    CloseReason.PROTOCOL_ERROR: CloseCode.PROTOCOL_ERROR,
    CloseReason.INTERNAL_ERROR: CloseCode.INTERNAL_ERROR,
}


def offer_message(offer: Offer) -> OfferMessage:
    """The SFU's offer as the client sees it."""
    return OfferMessage(offer.sdp, offer.tracks, offer.publish)


def event_message(event: PeerEvent) -> ParticipantJoined | ParticipantLeft:
    """Someone else's arrival or departure, as the client sees it (id and display name only)."""
    kind = ParticipantJoined if event.type == ParticipantJoined.type else ParticipantLeft
    return kind(event.participant, event.name)


MAX_CLOSE_REASON_BYTES = 123
"""A close frame's reason is at most 123 bytes of UTF-8 (RFC 6455, 5.5)."""


def close_reason_bytes(message: str) -> bytes:
    """``message`` as a close reason: cut to 123 bytes on a character boundary.

    A reason cut inside a multi-byte character is invalid UTF-8, and browsers then fail the close (1006).
    """
    # "replace": a reason quoting client text must not fail the close itself (a lone surrogate)
    return message.encode("utf-8", "replace")[:MAX_CLOSE_REASON_BYTES].decode("utf-8", "ignore").encode()


class Placement(Protocol):
    """Which node of a cluster hosts a room (:class:`~sfu_geofence.cluster.placement.RoomPlacement`)."""

    async def place(self, room: str) -> str | None:
        """None: this node hosts ``room``; else the hosting node's signaling URL."""
        ...


@dataclass(frozen=True)
class _Close:
    code: int
    message: str


class WebSocketChannel:
    """The SFU's :class:`~sfu_geofence.sfu.ParticipantChannel` over one WebSocket.

    Messages go through a queue and one writer task, so they leave in the order they were produced
    and a slow client never blocks the SFU.
    """

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self._ws = ws
        self._queue: asyncio.Queue[ServerMessage | _Close] = asyncio.Queue()
        self._writer = asyncio.ensure_future(self._write())
        self.ended = False
        self.close_code_override: int | None = None
        """A more specific close code the edge chose before ending the session (e.g. invalid SDP)."""

    def send(self, message: ServerMessage) -> None:
        if not self.ended:
            self._queue.put_nowait(message)

    def send_offer(self, offer: Offer) -> None:
        self.send(offer_message(offer))

    def send_event(self, event: PeerEvent) -> None:
        self.send(event_message(event))

    def end(self, reason: CloseReason, detail: str) -> None:
        if reason is CloseReason.EJECTED:
            self.send(EjectedMessage(detail))
        elif reason is not CloseReason.LEFT:
            self.send(ClosingMessage(reason.value, detail))
        code = self.close_code_override or CLOSE_CODE_FOR_REASON[reason]
        self.close(code, detail)

    def close(self, code: int, message: str) -> None:
        """Close after everything queued so far has been sent (idempotent)."""
        if self.ended:
            return
        self.ended = True
        self._queue.put_nowait(_Close(code, message))

    async def _write(self) -> None:
        ws = self._ws
        try:
            while True:
                item = await self._queue.get()
                if isinstance(item, _Close):
                    await ws.close(code=item.code, message=close_reason_bytes(item.message))
                    return
                await ws.send_str(encode(item))
        except (ConnectionError, RuntimeError):
            pass  # the client is gone; the receive loop notices

    async def wait_closed(self) -> None:
        try:
            await asyncio.wait_for(asyncio.shield(self._writer), 5)
        except TimeoutError:
            self._writer.cancel()


class SignalingSession:
    """Runs one client's WebSocket: parses messages, drives its participant, reports errors."""

    def __init__(
        self,
        sfu: Sfu,
        ws: web.WebSocketResponse,
        address: str,
        max_message_bytes: int,
        max_errors: int,
        join_timeout: float,
        identity: str | None = None,
        gate: AdmissionGate | None = None,
        ice_servers: tuple[IceServer, ...] = (),
        placement: Placement | None = None,
    ) -> None:
        self.sfu = sfu
        self.placement = placement
        """In a cluster: asked first, so a join for a room hosted elsewhere is sent there (``redirect``)
        before anything is decided or allocated here."""
        self.gate = gate
        """Admission control: asked before the SFU allocates anything for a join."""
        self.ws = ws
        self.address = address
        self.identity = identity
        """Who the edge vouches the client is (an authentication middleware's verdict), if anyone."""
        self.channel = WebSocketChannel(ws)
        self.participant: Participant | None = None
        self._max_message_bytes = max_message_bytes
        self._max_errors = max_errors
        self._errors = 0
        self._join_timeout = join_timeout
        self._ice_servers = ice_servers
        """Told to the client in ``joined`` (a TURN server for clients behind a firewall)."""

    async def run(self) -> None:
        join_timer = asyncio.get_running_loop().call_later(self._join_timeout, self._join_timed_out)
        try:
            async for message in self.ws:
                if message.type is WSMsgType.TEXT:
                    if not await self._handle_text(message.data):
                        break
                elif message.type is WSMsgType.BINARY:
                    self._error(ErrorCode.INVALID_MESSAGE, "binary messages are not part of the protocol")
                elif message.type is WSMsgType.ERROR:
                    break
                if self.channel.ended:
                    break
        finally:
            join_timer.cancel()
            self._end(CloseReason.DISCONNECTED, "signaling connection lost")
            await self.channel.wait_closed()

    def shut_down(self) -> None:
        """The server is draining: a session that has not joined is told so and closed (1001); a joined
        one is the SFU's, which closes it with the same reason."""
        if self.participant is None:
            message = "the server is shutting down"
            self.channel.send(ClosingMessage(CloseReason.SHUTDOWN.value, message))
            self.channel.close(CloseCode.GOING_AWAY, message)

    async def _handle_text(self, text: str) -> bool:
        """Handle one message; False when the session is over."""
        if self.channel.ended:  # closed meanwhile (a drain): not even a join may start now
            return False
        if len(text) > self._max_message_bytes or len(text.encode()) > self._max_message_bytes:
            self._fatal(CloseCode.MESSAGE_TOO_LARGE, f"message larger than {self._max_message_bytes} bytes")
            return False
        try:
            parsed = parse_client_message(text)
            if isinstance(parsed, Join):
                if self.participant is not None:
                    raise ProtocolError(ErrorCode.WRONG_STATE, "already joined")
                # The join's token first, before anything awaits Redis (catching up, placement): a
                # client cannot buy Redis work (or redirects) faster than the join rate.
                if not self._within_caps(token=True):
                    return False
                if self.sfu.admission_ready is not None:
                    await self.sfu.admission_ready()  # a cluster node that fell behind catches up
                    if self.channel.ended:  # timed out or closed meanwhile
                        return False
                # Placement last, with no await between it and the join: a lease claimed here is
                # never released (the room looking empty) before the SFU holds the room.
                if not await self._placed_here(parsed.room):
                    return False
                self._join(parsed)
            elif isinstance(parsed, Answer):
                await self._answer(parsed)
            elif isinstance(parsed, Leave):
                self._end(CloseReason.LEFT, "left")
                return False
        except ProtocolError as exc:
            self._error(exc.code, exc.message)
        except Exception:
            logger.exception("signaling session failed")
            self._fatal(CloseCode.INTERNAL_ERROR, "internal error", reason=INTERNAL_ERROR)
            return False
        return not self.channel.ended

    async def _placed_here(self, room: str) -> bool:
        """True when this node hosts ``room``; else the client is sent to the node that does."""
        if self.placement is None:
            return True
        url = await self.placement.place(room)
        if self.channel.ended:  # timed out or closed meanwhile
            return False
        if url is None:
            return True
        self.channel.send(Redirect(room, url))
        self.channel.close(CloseCode.REDIRECT, f"room {room} is hosted by another node: {url}")
        return False

    def _join(self, join: Join) -> None:
        if self.participant is not None:
            raise ProtocolError(ErrorCode.WRONG_STATE, "already joined")
        if not self._within_caps(token=False):  # the counts again, in the same step as the allocation
            return
        try:
            participant = self.sfu.join(
                room=join.room,
                name=join.name,
                address=self.address,
                channel=self.channel,
                publish=join.publish,
                identity=self.identity,
            )
        except Refused as refused:
            if refused.internal:
                logger.error("a join was refused: the server could not decide (see the audit)")
                logger.debug("the undecided join came from %s", self.address)
                self._fatal(CloseCode.INTERNAL_ERROR, "internal error", reason=INTERNAL_ERROR)
                return
            self._refuse(refused.reason, CloseCode.REFUSED if refused.by_policy else CloseCode.ROOM_FULL)
            return
        self.participant = participant
        room = self.sfu.rooms[join.room]
        # Queued before the first offer, which the participant's negotiation task sends later.
        others = tuple((o.id, o.name) for o in room.participants.values() if o is not participant)
        self.channel.send(Joined(participant.id, join.room, others, self._ice_servers))

    def _within_caps(self, *, token: bool) -> bool:
        """The admission gate's caps (``token``: take this join's token); refuses when over one."""
        over = self.gate.check_join(self.address, token=token) if self.gate is not None else None
        if over is None:
            return True
        logger.debug("join of %s refused: %s", self.address, over)
        self._refuse(over.message, CloseCode.ADDRESS_LIMIT if over.per_address else CloseCode.OVER_CAPACITY)
        return False

    def _refuse(self, reason: str, code: CloseCode) -> None:
        self.channel.send(RefusedMessage(reason))
        self.channel.close(code, reason)

    async def _answer(self, answer: Answer) -> None:
        participant = self.participant
        if participant is None:
            raise ProtocolError(ErrorCode.WRONG_STATE, "answer before join")
        try:
            await participant.handle_answer(answer.sdp)
        except WrongState as exc:
            raise ProtocolError(ErrorCode.WRONG_STATE, str(exc)) from None
        except InvalidAnswer as exc:
            too_large = isinstance(exc, AnswerTooLarge)
            self.channel.close_code_override = (
                CloseCode.MESSAGE_TOO_LARGE if too_large else CloseCode.INVALID_SDP
            )
            self._end(CloseReason.PROTOCOL_ERROR, f"invalid SDP answer: {exc}"[:200])

    def _join_timed_out(self) -> None:
        if self.participant is None and not self.channel.ended:
            message = f"no join within {self._join_timeout:g} s"
            self._fatal(CloseCode.TIMEOUT, message, ClosingMessage.JOIN_TIMEOUT)

    def _error(self, code: ErrorCode, message: str) -> None:
        self._errors += 1
        if self._errors > self._max_errors:
            self._fatal(CloseCode.PROTOCOL_ERROR, "too many protocol errors")
            return
        self.channel.send(ErrorMessage(code, message))

    def _fatal(self, code: CloseCode, message: str, reason: str = CloseReason.PROTOCOL_ERROR.value) -> None:
        self.channel.close_code_override = code
        if self.participant is None:
            self.channel.send(ClosingMessage(reason, message))
            self.channel.close(code, message)
        else:
            internal = code is CloseCode.INTERNAL_ERROR
            self._end(CloseReason.INTERNAL_ERROR if internal else CloseReason.PROTOCOL_ERROR, message)

    def _end(self, reason: CloseReason, detail: str) -> None:
        participant = self.participant
        if participant is None or not self.sfu.remove_participant(participant.id, reason, detail):
            self.channel.close(CLOSE_CODE_FOR_REASON[reason], detail)
