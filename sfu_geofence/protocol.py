"""The signaling protocol (docs/protocol.md): every message in both directions, errors and close codes.

Typed values with their wire form, and nothing else: no aiohttp, no SFU. The server (``signaling.py``),
the synthetic client and the tests all build and read messages here, so the wire format is written once.
"""

from __future__ import annotations

import enum
import json
import re
from dataclasses import Field, dataclass, fields
from typing import Any, ClassVar, Self


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
    REDIRECT = 4302
    """The room is hosted by another node of the cluster (a ``redirect`` naming it precedes the close):
    nothing was decided or allocated here; join again there."""
    OVER_CAPACITY = 4503
    """The server is at capacity (a global cap); the client may retry later."""
    INTERNAL_ERROR = 4500
    """A server bug; the client may retry."""


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


class _Flat:
    """A message whose fields go on the wire as they are, after its ``type``."""

    type: ClassVar[str]
    __dataclass_fields__: ClassVar[dict[str, Field[Any]]]

    def to_message(self) -> dict[str, Any]:
        return {"type": self.type} | {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_message(cls, data: dict[str, Any]) -> Self:
        return cls(**{f.name: data[f.name] for f in fields(cls)})


@dataclass(frozen=True)
class Join:
    """``join``: enter a room, saying which kinds of media the client will send."""

    type: ClassVar[str] = "join"
    room: str
    name: str = ""
    publish: frozenset[str] = frozenset(KINDS)

    def to_message(self) -> dict[str, Any]:
        publish = {kind: True for kind in KINDS if kind in self.publish}
        return {"type": self.type, "room": self.room, "name": self.name, "publish": publish}


@dataclass(frozen=True)
class Answer(_Flat):
    """``answer``: the client's SDP answer to the last offer."""

    type: ClassVar[str] = "answer"
    sdp: str


@dataclass(frozen=True)
class Leave(_Flat):
    """``leave``: the client says goodbye (the server closes with 1000)."""

    type: ClassVar[str] = "leave"


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

    type: ClassVar[str] = "joined"
    participant: str
    room: str
    participants: tuple[tuple[str, str], ...]
    """(id, display name) of everyone else in the room: never addresses or places."""
    ice_servers: tuple[IceServer, ...] = ()

    def to_message(self) -> dict[str, Any]:
        message: dict[str, Any] = {
            "type": self.type,
            "participant": self.participant,
            "room": self.room,
            "participants": [{"participant": pid, "name": name} for pid, name in self.participants],
        }
        if self.ice_servers:  # only a server given --turn says anything more
            message["ice_servers"] = [server.to_message() for server in self.ice_servers]
        return message

    @classmethod
    def from_message(cls, data: dict[str, Any]) -> Joined:
        return cls(
            participant=data["participant"],
            room=data["room"],
            participants=tuple((p["participant"], p["name"]) for p in data["participants"]),
            ice_servers=tuple(
                IceServer(s["urls"], s.get("username"), s.get("credential"))
                for s in data.get("ice_servers", ())
            ),
        )


@dataclass(frozen=True)
class OfferedTrack:
    """One sendonly m-line of an offer: whose track arrives on it."""

    mid: str
    participant: str
    name: str
    kind: str
    producer: str


@dataclass(frozen=True)
class PublishSlot:
    """One recvonly m-line of an offer, on which the server expects the client's media of ``kind``."""

    mid: str
    kind: str


@dataclass(frozen=True)
class OfferMessage:
    """``offer``: the server's SDP offer, and the current mapping of its m-lines."""

    type: ClassVar[str] = "offer"
    sdp: str
    tracks: tuple[OfferedTrack, ...] = ()
    publish: tuple[PublishSlot, ...] = ()

    def to_message(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "sdp": self.sdp,
            "tracks": [
                {
                    "mid": t.mid,
                    "participant": t.participant,
                    "name": t.name,
                    "kind": t.kind,
                    "producer": t.producer,
                }
                for t in self.tracks
            ],
            "publish": [{"mid": slot.mid, "kind": slot.kind} for slot in self.publish],
        }

    @classmethod
    def from_message(cls, data: dict[str, Any]) -> OfferMessage:
        return cls(
            sdp=data["sdp"],
            tracks=tuple(
                OfferedTrack(t["mid"], t["participant"], t["name"], t["kind"], t["producer"])
                for t in data["tracks"]
            ),
            publish=tuple(PublishSlot(slot["mid"], slot["kind"]) for slot in data["publish"]),
        )


@dataclass(frozen=True)
class ParticipantJoined(_Flat):
    """``participant-joined``: someone entered the room (their media comes in a later offer)."""

    type: ClassVar[str] = "participant-joined"
    participant: str
    name: str


@dataclass(frozen=True)
class ParticipantLeft(_Flat):
    """``participant-left``: someone left, for whatever reason (never shared with the others)."""

    type: ClassVar[str] = "participant-left"
    participant: str
    name: str


@dataclass(frozen=True)
class ErrorMessage(_Flat):
    """``error``: a bad client message was ignored; the session continues."""

    type: ClassVar[str] = "error"
    code: str
    """An :class:`ErrorCode` value."""
    message: str


@dataclass(frozen=True)
class RefusedMessage(_Flat):
    """``refused``: the join was refused (a close follows); the text concerns the refused client only."""

    type: ClassVar[str] = "refused"
    reason: str


@dataclass(frozen=True)
class EjectedMessage(_Flat):
    """``ejected``: the client was removed by policy or by an operator (close 4409 follows)."""

    type: ClassVar[str] = "ejected"
    reason: str


@dataclass(frozen=True)
class ClosingMessage(_Flat):
    """``closing``: the server is about to close the session.

    ``reason`` is a close reason's value (``protocol-error``, ``shutdown``...) or :attr:`JOIN_TIMEOUT`.
    """

    JOIN_TIMEOUT: ClassVar[str] = "join-timeout"
    """The client did not join in time (before any participant exists, so no close reason of the SFU's)."""

    type: ClassVar[str] = "closing"
    reason: str
    message: str


@dataclass(frozen=True)
class Redirect(_Flat):
    """``redirect``: another node of the cluster hosts ``room``; send the same ``join`` to ``url``
    (close 4302 follows). Nothing was decided or allocated on the node that sends it."""

    type: ClassVar[str] = "redirect"
    room: str
    url: str
    """The hosting node's signaling WebSocket URL (``ws://`` or ``wss://``)."""


ServerMessage = (
    Joined
    | OfferMessage
    | ParticipantJoined
    | ParticipantLeft
    | ErrorMessage
    | RefusedMessage
    | EjectedMessage
    | ClosingMessage
    | Redirect
)

_SERVER_MESSAGES: dict[str, type[ServerMessage]] = {
    kind.type: kind
    for kind in (
        Joined,
        OfferMessage,
        ParticipantJoined,
        ParticipantLeft,
        ErrorMessage,
        RefusedMessage,
        EjectedMessage,
        ClosingMessage,
        Redirect,
    )
}


def parse_server_message(text: str) -> ServerMessage:
    """Read one server message (a client's side); ``ValueError`` for anything else."""
    return server_message(json.loads(text))


def server_message(data: object) -> ServerMessage:
    """The server message a decoded JSON value is; ``ValueError`` if it is none.

    The server is trusted by its clients, so this checks the type and the fields' presence, not
    every field's bounds.
    """
    name = data.get("type") if isinstance(data, dict) else None
    kind = _SERVER_MESSAGES.get(name) if isinstance(name, str) else None
    if kind is None or not isinstance(data, dict):
        raise ValueError(f"not a server message: {str(data)[:80]!r}")
    try:
        return kind.from_message(data)
    except (KeyError, TypeError) as exc:
        raise ValueError(f"malformed {name} message: {exc!r}") from None


def encode(message: ClientMessage | ServerMessage) -> str:
    """The text frame that carries ``message``."""
    return json.dumps(message.to_message())
