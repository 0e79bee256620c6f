"""The signaling protocol's messages, errors and close codes (documented in docs/protocol.md)."""

from __future__ import annotations

import enum
import json
import re
from dataclasses import dataclass
from typing import Any

from ..sfu.events import CloseReason, Offer, PeerEvent


class CloseCode(enum.IntEnum):
    """WebSocket close codes the server uses."""

    NORMAL = 1000
    """The client left (after a ``leave``)."""
    GOING_AWAY = 1001
    """The server is shutting down."""
    PROTOCOL_ERROR = 4400
    """Too many bad messages, or a negotiation the client broke."""
    REFUSED = 4403
    """Refused by policy at join (a ``refused`` message with the reason precedes the close)."""
    TIMEOUT = 4408
    """The client did not join, or did not answer an offer, in time."""
    EJECTED = 4409
    """Removed by policy or by an operator (an ``ejected`` message with the reason precedes it)."""
    DISCONNECTED = 4410
    """The media connection failed."""
    MESSAGE_TOO_LARGE = 4413
    """A message exceeded the size limit."""
    INVALID_SDP = 4415
    """The client's answer could not be applied."""
    ROOM_FULL = 4429
    """The room has reached its participant limit."""
    ADDRESS_LIMIT = 4430
    """Too many sessions or joins in progress from the client's address, or joins too fast."""
    OVER_CAPACITY = 4503
    """The server is at capacity (a global cap); the client may retry later."""
    INTERNAL_ERROR = 4500
    """A server bug; the client may retry."""


CLOSE_CODE_FOR_REASON: dict[CloseReason, CloseCode] = {
    CloseReason.LEFT: CloseCode.NORMAL,
    CloseReason.SHUTDOWN: CloseCode.GOING_AWAY,
    CloseReason.DISCONNECTED: CloseCode.DISCONNECTED,
    CloseReason.EJECTED: CloseCode.EJECTED,
    CloseReason.NEGOTIATION_TIMEOUT: CloseCode.TIMEOUT,
    CloseReason.PROTOCOL_ERROR: CloseCode.PROTOCOL_ERROR,
    CloseReason.INTERNAL_ERROR: CloseCode.INTERNAL_ERROR,
}


class ErrorCode(enum.StrEnum):
    """``code`` of a non-fatal ``error`` message: the session continues."""

    MALFORMED_JSON = "malformed-json"
    INVALID_MESSAGE = "invalid-message"
    UNKNOWN_TYPE = "unknown-type"
    WRONG_STATE = "wrong-state"


class ProtocolError(Exception):
    """A bad client message that gets an ``error`` reply and leaves the session as it was."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


ROOM_PATTERN = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
MAX_NAME_LENGTH = 64
KINDS = ("audio", "video")


@dataclass(frozen=True)
class Join:
    room: str
    name: str
    publish: frozenset[str]


@dataclass(frozen=True)
class Answer:
    sdp: str


@dataclass(frozen=True)
class Leave:
    pass


ClientMessage = Join | Answer | Leave


def parse_client_message(text: str) -> ClientMessage:
    """Parse and check one client message, or raise :class:`ProtocolError` saying what is wrong."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ProtocolError(ErrorCode.MALFORMED_JSON, f"message is not JSON: {exc}") from None
    except RecursionError:  # "[[[[...": the decoder recurses once per level
        raise ProtocolError(ErrorCode.MALFORMED_JSON, "message nests too deeply") from None
    if not isinstance(data, dict):
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, "message must be a JSON object")
    kind = data.get("type")
    if not isinstance(kind, str):
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, 'message needs a string "type"')
    if kind == "join":
        return _parse_join(data)
    if kind == "answer":
        sdp = data.get("sdp")
        if not isinstance(sdp, str) or not sdp:
            raise ProtocolError(ErrorCode.INVALID_MESSAGE, 'answer needs a non-empty string "sdp"')
        _require_unicode("sdp", sdp)
        return Answer(sdp)
    if kind == "leave":
        return Leave()
    raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"unknown message type {kind[:40]!r}")


def _require_unicode(field: str, text: str) -> None:
    """Refuse a string JSON can carry but UTF-8 cannot (a lone surrogate, ``"\\ud800"``).

    Such a string breaks whatever encodes it later: an error message quoting it, a close reason, a log.
    """
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError:
            raise ProtocolError(
                ErrorCode.INVALID_MESSAGE, f'"{field}" must be valid Unicode (it has a lone surrogate)'
            ) from None


def _parse_join(data: dict[str, Any]) -> Join:
    room = data.get("room")
    if not isinstance(room, str) or not ROOM_PATTERN.fullmatch(room):
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, '"room" must be 1-64 characters of A-Z a-z 0-9 _ . -')
    name = data.get("name", "")
    if not isinstance(name, str) or len(name) > MAX_NAME_LENGTH:
        raise ProtocolError(
            ErrorCode.INVALID_MESSAGE, f'"name" must be a string of at most {MAX_NAME_LENGTH}'
        )
    _require_unicode("name", name)
    publish = data.get("publish", {"audio": True, "video": True})
    if not isinstance(publish, dict) or any(
        key not in KINDS or not isinstance(value, bool) for key, value in publish.items()
    ):
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, '"publish" must be {"audio": bool, "video": bool}')
    return Join(room=room, name=name, publish=frozenset(k for k, v in publish.items() if v))


@dataclass(frozen=True)
class IceServer:
    """A STUN/TURN server handed to clients in ``joined`` (``--turn``), as ``RTCIceServer`` takes it."""

    url: str
    """``turn:host:port``, ``turns:...`` or ``stun:...`` (RFC 7064/7065)."""
    username: str | None = None
    credential: str | None = None

    SCHEMES = ("turn:", "turns:", "stun:", "stuns:")

    def __post_init__(self) -> None:
        if not self.url.startswith(self.SCHEMES) or len(self.url) > 512:
            raise ValueError(
                f"{self.url[:80]!r} is not a TURN or STUN URL (turn:HOST:PORT, turns:..., stun:...)"
            )
        if self.url.startswith(("turn:", "turns:")) and not (self.username and self.credential):
            raise ValueError(f"TURN server {self.url} needs a username and a credential")

    def to_message(self) -> dict[str, str]:
        """The ``RTCIceServer`` dictionary a browser passes to ``setConfiguration``."""
        server = {"urls": self.url}
        if self.username is not None and self.credential is not None:
            server |= {"username": self.username, "credential": self.credential}
        return server


@dataclass(frozen=True)
class Joined:
    """``joined``: the join is accepted; who is there already, and the ICE servers to use."""

    participant: str
    room: str
    participants: tuple[tuple[str, str], ...]
    """(id, display name) of everyone else in the room: never addresses or places."""
    ice_servers: tuple[IceServer, ...] = ()

    def to_message(self) -> dict[str, Any]:
        message: dict[str, Any] = {
            "type": "joined",
            "participant": self.participant,
            "room": self.room,
            "participants": [{"participant": pid, "name": name} for pid, name in self.participants],
        }
        if self.ice_servers:  # only a server given --turn says anything more
            message["ice_servers"] = [server.to_message() for server in self.ice_servers]
        return message


def offer_message(offer: Offer) -> dict[str, Any]:
    return {
        "type": "offer",
        "sdp": offer.sdp,
        "tracks": [
            {
                "mid": t.mid,
                "participant": t.participant,
                "name": t.name,
                "kind": t.kind,
                "producer": t.producer,
            }
            for t in offer.tracks
        ],
        "publish": [{"mid": mid, "kind": kind} for mid, kind in offer.publish],
    }


def event_message(event: PeerEvent) -> dict[str, Any]:
    return {"type": event.type, "participant": event.participant, "name": event.name}


def closing_message(reason: str, message: str) -> dict[str, Any]:
    """Sent before the server closes a session: ``reason`` is a :class:`CloseReason` value or
    ``join-timeout``."""
    return {"type": "closing", "reason": reason, "message": message}


def refused_message(reason: str) -> dict[str, Any]:
    """The join was refused; ``reason`` concerns the refused client only."""
    return {"type": "refused", "reason": reason}


def error_message(code: str, message: str) -> dict[str, Any]:
    return {"type": "error", "code": code, "message": message}
