"""A participant's channel that records what the SFU tells it, for tests that join without signaling."""

from __future__ import annotations

import time

from aiortc import RTCBundlePolicy, RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from ..rtc.ice import IcePolicy, use_policy
from ..sfu import CloseReason, Offer, Participant, PeerEvent
from .wait import eventually


class RecordingChannel:
    """A :class:`~sfu_geofence.sfu.ParticipantChannel` keeping every offer, event and end, in order."""

    def __init__(self) -> None:
        self.offers: list[Offer] = []
        self.offered_at: list[float] = []
        """When each offer was sent (``time.monotonic()``)."""
        self.events: list[PeerEvent] = []
        self.ended: list[tuple[CloseReason, str]] = []
        """``(reason, detail)`` of each :meth:`end` (the SFU ends a session once)."""

    def send_offer(self, offer: Offer) -> None:
        self.offers.append(offer)
        self.offered_at.append(time.monotonic())

    def send_event(self, event: PeerEvent) -> None:
        self.events.append(event)

    def end(self, reason: CloseReason, detail: str) -> None:
        self.ended.append((reason, detail))


class AnsweringClient:
    """An aiortc peer connection answering, when told to, the SFU's offers from its own loopback address."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.channel = RecordingChannel()
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
        self.answered = 0

    async def answer(self, participant: Participant) -> None:
        """Answer the next unanswered offer (waiting for it)."""
        await eventually(
            lambda: None if len(self.channel.offers) > self.answered else "no offer to answer", within=15
        )
        offer = self.channel.offers[self.answered]
        with use_policy(IcePolicy(bind=(self.address,))):
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer.sdp, type="offer"))
            await self.pc.setLocalDescription(await self.pc.createAnswer())
        self.answered += 1
        await participant.handle_answer(self.pc.localDescription.sdp)
