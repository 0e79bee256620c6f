"""Prometheus metrics of one server (``/metrics`` on the admin listener), in a registry of its own.

Two kinds of figures. Counts the server keeps anyway (participants, refusals per cap, forwarded packets,
audit failures) are read when Prometheus scrapes, through :meth:`Metrics.add`, so the media path pays
nothing for them. Durations (decisions, ejections, event-loop lag, GC pauses) are observed into
histograms as they happen.

To add a figure from another module (a drain state, a database-watch alarm)::

    metrics.add("gauge", "sfu_geofence_draining", "1 while the server drains", lambda: float(draining))
    metrics.add("counter", "sfu_geofence_db_reloads", "database reloads by result",
                lambda: {("ok",): n}, labels=("result",))

Labels never carry an address or a country: metrics leave the machine more easily than the audit log.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Literal

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..rtc.forwarding import ForwardingSender
from ..sfu import CloseReason, Consumer, Participant, Producer, Sfu, SfuObserver
from .caps import AdmissionGate, Cap

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

LabelledValues = Mapping[tuple[str, ...], float]
"""Label values (in the order of ``labels``) -> value."""

LAG_INTERVAL = 0.1
"""Seconds between two event-loop lag probes."""


class _ReadOnScrape(Collector):
    """One metric family whose value(s) are read from the server when scraped."""

    def __init__(
        self,
        kind: type[CounterMetricFamily] | type[GaugeMetricFamily],
        name: str,
        documentation: str,
        read: Callable[[], float | LabelledValues],
        labels: tuple[str, ...],
    ) -> None:
        self._kind, self._name, self._documentation = kind, name, documentation
        self._read, self._labels = read, labels

    def describe(self) -> Iterator[Metric]:
        """The family without values: registering it reads nothing (``read`` may not work yet)."""
        yield self._kind(self._name, self._documentation, labels=self._labels or None)

    def collect(self) -> Iterator[Metric]:
        family = self._kind(self._name, self._documentation, labels=self._labels or None)
        value = self._read()
        if isinstance(value, Mapping):
            for label_values, number in value.items():
                family.add_metric(list(label_values), number)
        else:
            family.add_metric([], value)
        yield family


class Metrics(SfuObserver):
    """The server's metrics; an :class:`SfuObserver` of its SFU (for what left with participants)."""

    def __init__(self, sfu: Sfu, gate: AdmissionGate) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        """Register more collectors here (or use :meth:`add`)."""
        self._sfu = sfu
        self._retired = {"packets": 0, "bytes": 0, "retransmissions": 0, "unanswerable": 0, "plis": 0}
        """Counts of senders, consumers and producers that are gone (so the totals never go down)."""
        self.decision_seconds = self._histogram(
            "sfu_geofence_decision_seconds",
            "Time the geofence takes to decide on a join (lookup, policy, audit write)",
            (0.00001, 0.00003, 0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03, 0.1),
        )
        self.ejection_seconds = self._histogram(
            "sfu_geofence_ejection_seconds",
            "Time from an ejection request to the participant's media stopped and its being told",
            (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1, 3),
        )
        self.loop_lag_seconds = self._histogram(
            "sfu_geofence_event_loop_lag_seconds",
            f"How late a callback scheduled every {LAG_INTERVAL} s runs (the event loop was busy)",
            (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1),
        )
        self.gc_pause_seconds = self._histogram(
            "sfu_geofence_gc_pause_seconds",
            "Duration of the cyclic garbage collector's collections (they stop the event loop)",
            (0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3),
        )
        self.add(
            "gauge",
            "sfu_geofence_participants",
            "Participants (joined, media up or not)",
            lambda: len(sfu.participants),
        )
        self.add("gauge", "sfu_geofence_rooms", "Rooms with participants", lambda: len(sfu.rooms))
        self.add("gauge", "sfu_geofence_websockets", "Open signaling WebSockets", lambda: gate.websockets)
        self.add(
            "gauge",
            "sfu_geofence_pending_joins",
            "Participants whose media connection is not up yet",
            lambda: gate.pending_joins,
        )
        self.add(
            "counter",
            "sfu_geofence_cap_refusals",
            "WebSockets and joins refused by admission control, by cap",
            lambda: {(str(cap),): n for cap, n in gate.refusals.items()},
            labels=("cap",),
        )
        self.add(
            "counter",
            "sfu_geofence_joins",
            "Joins by outcome and reason (admitted; refused by a cap, the room's size or policy)",
            lambda: self._joins(gate),
            labels=("outcome", "reason"),
        )
        self.add(
            "counter",
            "sfu_geofence_forwarded_packets",
            "RTP packets forwarded to subscribers",
            lambda: self._sent()[0],
        )
        self.add(
            "counter",
            "sfu_geofence_forwarded_payload_bytes",
            "RTP payload bytes forwarded to subscribers",
            lambda: self._sent()[1],
        )
        self.add(
            "counter",
            "sfu_geofence_nacks",
            "Packets subscribers reported lost (NACK), by whether they were retransmitted",
            lambda: self._nacks(),
            labels=("result",),
        )
        self.add(
            "counter",
            "sfu_geofence_keyframe_requests",
            "Keyframe requests (PLI) sent to publishers",
            lambda: self._retired["plis"] + sum(p.keyframe_requests_sent for p in self._producers()),
        )

    # -- extending ---------------------------------------------------------------------------------

    def add(
        self,
        kind: Literal["gauge", "counter"],
        name: str,
        documentation: str,
        read: Callable[[], float | LabelledValues],
        labels: tuple[str, ...] = (),
    ) -> None:
        """A gauge, or a counter (``name`` without ``_total``), whose value ``read()`` gives at each
        scrape: a number, or numbers by label values."""
        family = GaugeMetricFamily if kind == "gauge" else CounterMetricFamily
        self.registry.register(_ReadOnScrape(family, name, documentation, read, labels))

    def exposition(self) -> bytes:
        """The text format Prometheus scrapes."""
        return generate_latest(self.registry)

    # -- running probes ----------------------------------------------------------------------------

    async def probe(self) -> None:
        """Measure event-loop lag and GC pauses until cancelled (run it for the server's lifetime)."""
        started: list[float] = []

        def on_gc(phase: str, info: dict[str, Any]) -> None:
            if phase == "start":
                started[:] = [time.perf_counter()]
            elif started:
                self.gc_pause_seconds.observe(time.perf_counter() - started.pop())

        gc.callbacks.append(on_gc)
        loop = asyncio.get_running_loop()
        try:
            while True:
                due = loop.time() + LAG_INTERVAL
                await asyncio.sleep(LAG_INTERVAL)
                self.loop_lag_seconds.observe(max(0.0, loop.time() - due))
        finally:
            gc.callbacks.remove(on_gc)

    # -- SfuObserver: keep the counts of what goes away --------------------------------------------

    def participant_left(self, participant: Participant, reason: CloseReason, detail: str) -> None:
        packets, octets = _sent_by(participant)
        self._retired["packets"] += packets
        self._retired["bytes"] += octets

    def consumer_closed(self, consumer: Consumer) -> None:
        self._retired["retransmissions"] += consumer.retransmissions
        self._retired["unanswerable"] += consumer.nacks_unanswerable

    def producer_closed(self, producer: Producer) -> None:
        self._retired["plis"] += producer.keyframe_requests_sent

    # -- inside ------------------------------------------------------------------------------------

    def _histogram(self, name: str, documentation: str, buckets: Iterable[float]) -> Histogram:
        return Histogram(name, documentation, buckets=tuple(buckets), registry=self.registry)

    def _joins(self, gate: AdmissionGate) -> LabelledValues:
        sfu = self._sfu
        values: dict[tuple[str, ...], float] = {("admitted", ""): sfu.joins_admitted}
        for reason, n in sfu.refusals.items():
            values[("refused", reason)] = n
        for cap, n in gate.refusals.items():
            if cap not in (Cap.WEBSOCKETS, Cap.WEBSOCKETS_PER_ADDRESS):
                values[("refused", str(cap))] = n
        return values

    def _sent(self) -> tuple[int, int]:
        packets, octets = self._retired["packets"], self._retired["bytes"]
        for participant in list(self._sfu.participants.values()):
            p, o = _sent_by(participant)
            packets, octets = packets + p, octets + o
        return packets, octets

    def _nacks(self) -> LabelledValues:
        consumers = [c for p in list(self._sfu.participants.values()) for c in p.consumers.values()]
        return {
            ("retransmitted",): self._retired["retransmissions"] + sum(c.retransmissions for c in consumers),
            ("unanswerable",): self._retired["unanswerable"] + sum(c.nacks_unanswerable for c in consumers),
        }

    def _producers(self) -> list[Producer]:
        return [
            p for participant in list(self._sfu.participants.values()) for p in participant.producers.values()
        ]


def _sent_by(participant: Participant) -> tuple[int, int]:
    packets = octets = 0
    for transceiver in participant.pc.getTransceivers():
        sender = transceiver.sender
        if isinstance(sender, ForwardingSender):
            packets += sender.packets_sent
            octets += sender.octets_sent
    return packets, octets
