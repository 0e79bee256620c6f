"""A producer's fan-out on the real SFU and real subscriber connections: each packet reaches each
consumer once, whichever path (C or Python) carries it, and the C fan-out follows the bindings.

The publisher's packets are handed to its real Producer as its receiver would hand them over, so that
their order, padding and timing are the test's.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import resource
import socket
from collections.abc import AsyncIterator

import pytest
from aiortc.rtp import RtpPacket

from sfu_geofence.rtc.fanout import FANOUT_ENV, descriptors_per_socket
from sfu_geofence.rtc.forwarding import ntp_now
from sfu_geofence.sfu import CloseReason, Participant, Sfu
from sfu_geofence.sfu.consumer import Consumer
from sfu_geofence.sfu.producer import BINDING_CHECK_INTERVAL, Producer
from sfu_geofence.testing.channel import AnsweringClient
from sfu_geofence.testing.wait import eventually


class Publication:
    """A real publisher's video producer on the SFU, and real subscribers joining it one by one."""

    def __init__(self, sfu: Sfu, network: str) -> None:
        self.sfu = sfu
        self.network = network
        self.clients: list[AnsweringClient] = []
        self.producer: Producer | None = None
        self.sequence_number = 100

    async def publish(self) -> Producer:
        client = self._client()
        publisher = self.sfu.join("r", "publisher", client.address, client.channel, publish=("video",))
        await client.answer(publisher)
        self.producer = publisher.producers["video"]
        return self.producer

    async def subscribe(self, name: str) -> Consumer:
        assert self.producer is not None
        client = self._client()
        subscriber: Participant = self.sfu.join("r", name, client.address, client.channel, publish=())
        await client.answer(subscriber)
        consumer = subscriber.consumers[self.producer.id]
        dtls = consumer.sender.transport
        await eventually(lambda: None if dtls.state == "connected" else f"DTLS {dtls.state}", within=15)
        return consumer

    def send(self, padding: int = 0) -> None:
        """One VP8 packet (with ``padding`` bytes of padding) from the publisher, the next in sequence."""
        assert self.producer is not None
        payload_type = next(pt for pt, c in self.producer.codecs.items() if c.mimeType == "video/VP8")
        packet = RtpPacket(payload_type=payload_type, sequence_number=self.sequence_number, ssrc=0xBEEF)
        packet.payload = b"\x10" + bytes(30)
        packet.padding_size = padding
        self.sequence_number += 1
        self.producer.on_packet(packet)

    def socket_of(self, consumer: Consumer) -> socket.socket:
        """The SFU's socket under the subscriber's nominated ICE pair."""
        pair = consumer.sender.transport.transport._connection._nominated[1]
        sock: socket.socket = pair.protocol.transport.get_extra_info("socket")
        return sock

    def client_of(self, consumer: Consumer) -> AnsweringClient:
        channel = self.sfu.participants[consumer.subscriber_id].channel
        return next(c for c in self.clients if c.channel is channel)

    def _client(self) -> AnsweringClient:
        client = AnsweringClient(f"{self.network}.{len(self.clients) + 1}")
        self.clients.append(client)
        return client

    async def close(self) -> None:
        for client in self.clients:
            await client.pc.close()


@pytest.fixture
async def publication(sfu: Sfu) -> AsyncIterator[Publication]:
    publication = Publication(sfu, "127.0.53")
    try:
        await publication.publish()
        yield publication
    finally:
        await publication.close()


@pytest.mark.usefixtures("c_fanout")
async def test_a_consumer_that_joins_the_c_fanout_at_the_periodic_check_gets_that_packet_once(
    publication: Publication,
) -> None:
    # A consumer whose first packet is a padded one (sent in Python while another consumer is on the
    # C fan-out) is ready for C, and joins it at the next binding check: the packet that triggers the
    # check must go to it by one path only.
    first = await publication.subscribe("first")
    publication.send()
    producer = first.producer
    assert producer.consumers_in_c == (first,)
    second = await publication.subscribe("second")
    publication.send(padding=4)  # the second's first packet, through Python (padding stays there)
    assert (first.packets_forwarded, second.packets_forwarded) == (2, 1)
    assert producer.consumers_in_c == (first,)
    await asyncio.sleep(BINDING_CHECK_INTERVAL * 1.5)

    publication.send()  # the check is due: the second joins the C fan-out

    assert set(producer.consumers_in_c) == {first, second}
    assert (first.packets_forwarded, second.packets_forwarded) == (3, 2)


@pytest.mark.usefixtures("c_fanout")
@pytest.mark.parametrize("clock", ["steady", "stepped-back"])
async def test_a_subscriber_that_closes_its_dtls_leaves_the_c_fanout_at_the_next_check(
    publication: Publication, clock: str
) -> None:
    # The Python path checks the DTLS state per packet, the C fan-out at the next binding check, which
    # must come however the wall clock moved (an NTP step back, here: the last check seems an hour ahead).
    consumer = await publication.subscribe("subscriber")
    publication.send()
    producer = consumer.producer
    assert producer.consumers_in_c == (consumer,)
    await publication.client_of(consumer).pc.getTransceivers()[0].sender.transport.stop()  # close_notify
    dtls = consumer.sender.transport
    await eventually(lambda: None if dtls.state == "closed" else f"SFU's DTLS {dtls.state}", within=15)
    if clock == "stepped-back":
        producer._checked_ntp = ntp_now() + 3600 * 2**32
    await asyncio.sleep(BINDING_CHECK_INTERVAL * 1.5)

    publication.send()
    publication.send()

    assert producer.consumers_in_c == ()
    assert consumer.packets_forwarded == 1


@pytest.mark.usefixtures("c_fanout")
async def test_out_of_file_descriptors_a_consumer_stays_on_the_python_path(publication: Publication) -> None:
    # The C fan-out sends on its own descriptor of the socket (a dup); when the process has none left
    # (EMFILE, a busy server), the line stays on the Python path, which needs none: media still flows.
    consumer = await publication.subscribe("subscriber")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    lowest_free = os.dup(0)
    os.close(lowest_free)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free, hard))  # no descriptor can be made now
    try:
        for _ in range(3):
            publication.send()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    assert (consumer.packets_forwarded, consumer.producer.forwarding_errors) == (3, 0)
    assert consumer.producer.consumers_in_c == ()


def _descriptors_of(sock: socket.socket) -> int:
    """How many of this process's file descriptors refer to ``sock``."""
    inode = os.fstat(sock.fileno()).st_ino
    links = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(FileNotFoundError):  # the descriptor listdir itself had open
            links.append(os.readlink(f"/proc/self/fd/{fd}"))
    return links.count(f"socket:[{inode}]")


@pytest.mark.parametrize("fanout", ["c", "python"])
async def test_a_subscriber_socket_costs_the_descriptors_the_open_file_budget_counts(
    publication: Publication, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest, fanout: str
) -> None:
    # The C fan-out sends on its own descriptor of the socket (a dup): the open-file budget
    # (server.fdlimit) counts it. The Python path needs none, and makes none.
    if fanout == "c":
        request.getfixturevalue("c_fanout")
    monkeypatch.setenv(FANOUT_ENV, fanout)
    consumer = await publication.subscribe("subscriber")

    for _ in range(3):
        publication.send()

    assert consumer.packets_forwarded == 3
    assert len(consumer.producer.consumers_in_c) == (1 if fanout == "c" else 0)
    assert (
        _descriptors_of(publication.socket_of(consumer))
        == descriptors_per_socket()
        == (2 if fanout == "c" else 1)
    )


@pytest.mark.usefixtures("c_fanout")
async def test_a_subscriber_that_leaves_frees_its_socket_at_once_not_at_the_next_collection(
    publication: Publication,
) -> None:
    # The C fan-out's own descriptor of the socket is closed when the last line using it unbinds, as
    # the event loop closes its own: left to the cyclic collector, every departed participant's sockets
    # (ports and descriptors) would outlive it until the next full collection.
    consumer = await publication.subscribe("subscriber")
    publication.send()
    assert consumer.producer.consumers_in_c == (consumer,)
    address = publication.socket_of(consumer).getsockname()
    gc.disable()  # only what the SFU closes itself counts
    try:
        publication.sfu.remove_participant(consumer.subscriber_id, CloseReason.LEFT)
        await publication.sfu.close()  # waits until the participant's connection is closed
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with probe:
            probe.bind(address)  # the port is free again
    finally:
        gc.enable()


@pytest.mark.usefixtures("c_fanout")
async def test_a_consumer_that_closes_leaves_its_subscribers_other_consumers_on_the_shared_socket(
    sfu: Sfu, publication: Publication
) -> None:
    # Two consumers of one subscriber send on one socket, through one handle: the first to close unbinds
    # its own line only, and the handle stays open for the other (closing it would send on a dead or
    # reused descriptor number).
    other = Publication(sfu, "127.0.54")
    try:
        await other.publish()
        consumer = await publication.subscribe("subscriber")
        subscriber = sfu.participants[consumer.subscriber_id]
        assert other.producer is not None
        leaving = subscriber.consumers[other.producer.id]
        publication.send()
        other.send()
        assert consumer in consumer.producer.consumers_in_c
        assert leaving in other.producer.consumers_in_c
        sock = publication.socket_of(consumer)

        subscriber.unsubscribe(other.producer.id)
        publication.send()

        assert (consumer.packets_forwarded, leaving.sender.line.fd) == (2, -1)
        assert consumer in consumer.producer.consumers_in_c
        assert consumer.sender.line.fd >= 0
        assert _descriptors_of(sock) == 2  # the handle is still open
    finally:
        await other.close()
