"""A room (mediasoup's router): who is in it, who publishes what, and who receives it."""

from __future__ import annotations

from collections.abc import Iterator

from .events import PeerEvent, SfuObserver
from .participant import Participant
from .producer import Producer


class Room:
    """Participants of one room; every participant receives every other participant's producers."""

    def __init__(self, name: str, observer: SfuObserver) -> None:
        self.name = name
        self.participants: dict[str, Participant] = {}
        self._observer = observer

    def __repr__(self) -> str:
        return f"Room({self.name!r}, {len(self.participants)} participants)"

    def live_producers(self) -> Iterator[Producer]:
        """Producers whose publication has been negotiated (and so can be subscribed to)."""
        for participant in self.participants.values():
            if participant.published:
                for producer in participant.producers.values():
                    if not producer.closed:
                        yield producer

    def add(self, participant: Participant) -> None:
        """Admit an allocated participant: it receives what is already published, others hear of it."""
        joined = PeerEvent("participant-joined", participant.id, participant.name)
        for other in self.participants.values():
            other.send_event(joined)
        producers = list(self.live_producers())
        self.participants[participant.id] = participant
        for producer in producers:
            participant.subscribe(producer)
        # The first offer carries the participant's own publications even if it receives nothing yet.
        participant.request_renegotiation()

    def announce(self, producer: Producer) -> None:
        """A publication was negotiated: every other participant subscribes to it."""
        self._observer.producer_added(producer)
        for participant in list(self.participants.values()):
            if participant.id != producer.participant_id:
                participant.subscribe(producer)

    def remove(self, participant: Participant) -> bool:
        """Take a participant out: close its producers and, in each subscriber, their consumers only."""
        if self.participants.pop(participant.id, None) is None:
            return False
        for producer in participant.producers.values():
            for consumer in producer.close():
                subscriber = self.participants.get(consumer.subscriber_id)
                if subscriber is not None:
                    subscriber.unsubscribe(producer.id)
                else:
                    consumer.close()
            self._observer.producer_closed(producer)
        left = PeerEvent("participant-left", participant.id, participant.name)
        for other in self.participants.values():
            # Consumers created but not yet negotiated are not in a producer's fan-out: drop them too.
            for producer in participant.producers.values():
                other.unsubscribe(producer.id)
            other.send_event(left)
        return True

    @property
    def empty(self) -> bool:
        return not self.participants
