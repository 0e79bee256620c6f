"""Janus's API as the gate reads and writes it: client messages checked before they can reach Janus,
errors in Janus's own format, and the few requests and events the gate must recognise.

A message that is not a JSON object of at most :data:`MAX_MESSAGE_BYTES`, or lacks ``janus`` or
``transaction``, is answered here with the error Janus itself would give (its codes, its ``error``
object) and never forwarded: Janus parses whatever reaches it, so what it never sees cannot hurt it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..janus.client import JsonObject
from ..protocol import ROOM_PATTERN

MAX_MESSAGE_BYTES = 256 * 1024
"""Largest client message (an SDP offer of many streams is tens of kilobytes)."""

VIDEOROOM = "janus.plugin.videoroom"
JOIN_REQUESTS = frozenset({"join", "joinandconfigure"})
"""VideoRoom requests that make a handle a participant of a room (publisher or subscriber)."""

# Janus's own error codes (janus/apierror.h), so stock clients understand the gate's refusals.
UNAUTHORIZED = 403
TRANSPORT_SPECIFIC = 450
MISSING_REQUEST = 452
INVALID_JSON = 454
INVALID_JSON_OBJECT = 455
MISSING_MANDATORY_ELEMENT = 456
SESSION_NOT_FOUND = 458
HANDLE_NOT_FOUND = 459
UNKNOWN = 490


class WireError(Exception):
    """A client message the gate answers itself with a Janus error (``code``, ``reason``)."""

    def __init__(self, code: int, reason: str, transaction: str | None = None) -> None:
        super().__init__(reason)
        self.code, self.reason, self.transaction = code, reason, transaction

    def reply(self, session: int | None = None) -> JsonObject:
        return error_reply(self.code, self.reason, self.transaction, session)


def error_reply(code: int, reason: str, transaction: str | None, session: int | None = None) -> JsonObject:
    """``{"janus": "error", ...}`` exactly as Janus answers a request it refuses."""
    reply: JsonObject = {"janus": "error"}
    if session is not None:
        reply["session_id"] = session
    if transaction is not None:
        reply["transaction"] = transaction
    reply["error"] = {"code": code, "reason": reason}
    return reply


def parse_message(raw: bytes | str) -> JsonObject:
    """A client's message as a JSON object with ``janus`` and ``transaction``, else :class:`WireError`."""
    if len(raw) > MAX_MESSAGE_BYTES:
        raise WireError(TRANSPORT_SPECIFIC, f"message larger than {MAX_MESSAGE_BYTES} bytes")
    try:
        message = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise WireError(INVALID_JSON, f"JSON error: {exc}") from None
    except RecursionError:
        raise WireError(INVALID_JSON, "JSON error: nested too deeply") from None
    if not isinstance(message, dict):
        raise WireError(INVALID_JSON_OBJECT, "JSON error: not an object")
    transaction = message.get("transaction")
    if not isinstance(transaction, str) or not transaction:
        raise WireError(MISSING_MANDATORY_ELEMENT, "Missing mandatory element (transaction)")
    if not isinstance(message.get("janus"), str):
        raise WireError(MISSING_REQUEST, "Missing mandatory element (janus)", transaction)
    return message


def identifier(value: Any) -> int | None:
    """A session or handle id as Janus writes it (a positive 64-bit integer), else None."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2**64:
        return None
    return value


@dataclass(frozen=True, slots=True)
class Join:
    """A VideoRoom join as the client asked for it: the room and the name it gives itself."""

    room: str
    ptype: str
    display: str | None


def videoroom_join(message: JsonObject) -> Join | None:
    """The join a plugin message asks for, or None when it is no join (it then passes unchanged).

    Janus room ids are integers (or strings with ``string_ids``); a join naming a room the geofence
    cannot name (another type, or a name outside its room pattern) is refused by :class:`WireError`,
    never let through unchecked.
    """
    body = message.get("body")
    if message.get("janus") != "message" or not isinstance(body, dict):
        return None
    if body.get("request") not in JOIN_REQUESTS:
        return None
    room = body.get("room")
    transaction = str(message["transaction"])
    if isinstance(room, bool) or not isinstance(room, int | str) or not ROOM_PATTERN.fullmatch(str(room)):
        raise WireError(MISSING_MANDATORY_ELEMENT, "Invalid element (room)", transaction)
    display = body.get("display")
    ptype = body.get("ptype")
    return Join(str(room), str(ptype), display if isinstance(display, str) else None)


def plugin_data(event: JsonObject) -> JsonObject:
    data = event.get("plugindata", {}).get("data") if isinstance(event.get("plugindata"), dict) else None
    return data if isinstance(data, dict) else {}
