"""A participant's channel that records what the SFU tells it, for tests that join without signaling."""

from __future__ import annotations

from ..sfu import CloseReason, Offer, PeerEvent


class RecordingChannel:
    """A :class:`~sfu_geofence.sfu.ParticipantChannel` keeping every offer, event and end, in order."""

    def __init__(self) -> None:
        self.offers: list[Offer] = []
        self.events: list[PeerEvent] = []
        self.ended: list[tuple[CloseReason, str]] = []
        """``(reason, detail)`` of each :meth:`end` (the SFU ends a session once)."""

    def send_offer(self, offer: Offer) -> None:
        self.offers.append(offer)

    def send_event(self, event: PeerEvent) -> None:
        self.events.append(event)

    def end(self, reason: CloseReason, detail: str) -> None:
        self.ended.append((reason, detail))
