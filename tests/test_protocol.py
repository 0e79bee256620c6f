"""The signaling protocol module: every message in both directions has one type and one wire form."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sfu_geofence.protocol import (
    KINDS,
    Answer,
    ClientMessage,
    ClosingMessage,
    EjectedMessage,
    ErrorCode,
    ErrorMessage,
    IceServer,
    Join,
    Joined,
    Leave,
    OfferedTrack,
    OfferMessage,
    ParticipantJoined,
    ParticipantLeft,
    PublishSlot,
    Redirect,
    RefusedMessage,
    ServerMessage,
    encode,
    parse_client_message,
    parse_server_message,
)

ROOT = Path(__file__).parent.parent

CLIENT_MESSAGES: list[ClientMessage] = [
    Join("room-1", "Ann", frozenset(KINDS)),
    Join("room-1", "", frozenset({"audio"})),
    Join("room-1", "Bob", frozenset()),
    Answer("v=0\r\n"),
    Leave(),
]

SERVER_MESSAGES: list[ServerMessage] = [
    Joined("p1", "room-1", (("p2", "Bob"),)),
    Joined(
        "p1", "room-1", (), (IceServer("turn:127.0.0.1:3478", "u", "c"), IceServer("stun:127.0.0.1:3478"))
    ),
    OfferMessage(
        "v=0\r\n",
        (OfferedTrack("0", "p2", "Bob", "audio", "pr1"),),
        (PublishSlot("1", "video"),),
    ),
    ParticipantJoined("p2", "Bob"),
    ParticipantLeft("p2", "Bob"),
    ErrorMessage(ErrorCode.WRONG_STATE, "already joined"),
    RefusedMessage("This meeting is not accessible from China (CN)."),
    EjectedMessage("An operator removed you from this meeting."),
    ClosingMessage("join-timeout", "no join within 10 s"),
    Redirect("room-1", "wss://sfu-2.example.org/ws"),
]


@pytest.mark.parametrize("message", CLIENT_MESSAGES, ids=repr)
def test_the_server_reads_back_every_client_message_the_client_writes(message: ClientMessage) -> None:
    assert parse_client_message(encode(message)) == message


@pytest.mark.parametrize("message", SERVER_MESSAGES, ids=repr)
def test_a_client_reads_back_every_server_message_the_server_writes(message: ServerMessage) -> None:
    assert parse_server_message(encode(message)) == message


def test_the_wire_form_is_the_documented_one() -> None:
    assert json.loads(encode(Join("r", "n", frozenset({"video"})))) == {
        "type": "join",
        "room": "r",
        "name": "n",
        "publish": {"video": True},
    }
    offer = OfferMessage("sdp", (OfferedTrack("0", "p", "n", "audio", "pr"),), (PublishSlot("1", "video"),))
    assert json.loads(encode(offer)) == {
        "type": "offer",
        "sdp": "sdp",
        "tracks": [{"mid": "0", "participant": "p", "name": "n", "kind": "audio", "producer": "pr"}],
        "publish": [{"mid": "1", "kind": "video"}],
    }
    assert json.loads(encode(ParticipantLeft("p", "n"))) == {
        "type": "participant-left",
        "participant": "p",
        "name": "n",
    }
    assert json.loads(encode(ErrorMessage(ErrorCode.UNKNOWN_TYPE, "m"))) == {
        "type": "error",
        "code": "unknown-type",
        "message": "m",
    }
    assert json.loads(encode(Redirect("r", "ws://127.0.0.1:8080/ws"))) == {
        "type": "redirect",
        "room": "r",
        "url": "ws://127.0.0.1:8080/ws",
    }


@pytest.mark.parametrize("text", ['{"type": "join", "room": "r"}', '{"type": "offer"}', "[1]", '{"type": 1}'])
def test_anything_but_a_server_message_is_a_value_error_on_the_client_side(text: str) -> None:
    with pytest.raises(ValueError, match=r"server message|malformed offer"):
        parse_server_message(text)
