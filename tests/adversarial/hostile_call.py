"""A call with one hostile participant, and how tests reach into it (the rules: conftest.py)."""

from __future__ import annotations

from dataclasses import dataclass

from aiortc import RTCRtpReceiver

from sfu_geofence.rtc.tap import ReceiverTap, tap_of
from sfu_geofence.sfu import Consumer, Producer
from sfu_geofence.synthetic.client import SyntheticPeer
from sfu_geofence.testing.server import Served
from sfu_geofence.testing.wait import eventually


@dataclass
class Call:
    """Three participants who all publish audio and video: an honest pair and an attacker."""

    served: Served
    publisher: SyntheticPeer
    viewer: SyntheticPeer
    attacker: SyntheticPeer

    @property
    def honest(self) -> tuple[SyntheticPeer, SyntheticPeer]:
        return (self.publisher, self.viewer)

    def producer(self, peer: SyntheticPeer, kind: str) -> Producer:
        return self.served.sfu.participants[str(peer.participant_id)].producers[kind]

    def consumer(self, source: SyntheticPeer, kind: str, subscriber: SyntheticPeer) -> Consumer:
        producer = self.producer(source, kind)
        return next(c for c in producer.consumers if c.subscriber_id == subscriber.participant_id)

    def receiver(self, subscriber: SyntheticPeer, source: SyntheticPeer, kind: str) -> RTCRtpReceiver:
        """The subscriber's receiver of ``source``'s track (its RTCP goes out on its own transport)."""
        assert subscriber.pc is not None
        mid = subscriber.received[self.producer(source, kind).id].mid
        return next(t.receiver for t in subscriber.pc.getTransceivers() if t.mid == mid)

    def tap(self, subscriber: SyntheticPeer, source: SyntheticPeer, kind: str) -> ReceiverTap:
        tap = tap_of(self.receiver(subscriber, source, kind))
        assert tap is not None
        return tap

    async def advancing(self, frames: int = 10, attacker_kinds: tuple[str, ...] = ("audio", "video")) -> None:
        """Every honest stream (publisher <-> viewer, and the attacker's ``attacker_kinds`` to both)
        moves on by ``frames`` frames."""
        streams = [
            *((self.viewer, self.publisher, kind) for kind in ("audio", "video")),
            *((self.publisher, self.viewer, kind) for kind in ("audio", "video")),
            *(
                (peer, self.attacker, kind)
                for peer in (self.viewer, self.publisher)
                for kind in attacker_kinds
            ),
        ]

        def counts() -> dict[tuple[str, str, str], int]:
            return {
                (peer.name, source.name, kind): peer.meters(str(source.participant_id), kind)[0].frames
                for peer, source, kind in streams
            }

        before = counts()

        def check() -> str | None:
            now = counts()
            stuck = [key for key, count in now.items() if count < before[key] + frames]
            return f"streams not advancing: {stuck}" if stuck else None

        await eventually(check, within=15)
