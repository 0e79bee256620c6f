"""The SFU: rooms, participants, producers and consumers forwarding RTP without transcoding."""

from .consumer import Consumer
from .events import (
    AdmissionHook,
    CloseReason,
    JoinRequest,
    Offer,
    ParticipantChannel,
    PeerEvent,
    Refusal,
    SfuObserver,
)
from .participant import AnswerTooLarge, InvalidAnswer, Participant, WrongState
from .producer import Producer
from .room import Room
from .sfu import Refused, Sfu, SfuConfig

__all__ = [
    "AdmissionHook",
    "AnswerTooLarge",
    "CloseReason",
    "Consumer",
    "InvalidAnswer",
    "JoinRequest",
    "Offer",
    "Participant",
    "ParticipantChannel",
    "PeerEvent",
    "Producer",
    "Refusal",
    "Refused",
    "Room",
    "Sfu",
    "SfuConfig",
    "SfuObserver",
    "WrongState",
]
