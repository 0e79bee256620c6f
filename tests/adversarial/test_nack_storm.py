"""A subscriber's NACKs buy a bounded number of retransmissions (issue 9, item 3).

Before: every entry of a NACK was retransmitted, duplicates included, with no cap, and 5 NACK packets
of 1 172 bytes bought 24 650 retransmissions (~104 ms of event loop each).
"""

from __future__ import annotations

import asyncio
import time

import pytest
from hostile_call import Call

from sfu_geofence.rtc.access import sender_ssrc
from sfu_geofence.sfu import Consumer
from sfu_geofence.sfu.retransmission import (
    MAX_NACK_ENTRIES,
    RETRANSMISSION_BURST,
    RETRANSMISSIONS_PER_SECOND,
    SUBSCRIBER_RETRANSMISSION_BURST,
    SUBSCRIBER_RETRANSMISSIONS_PER_SECOND,
)
from sfu_geofence.testing.attacks import NACK_STORM_BYTES, nack, nack_storm_packet, send_protected
from sfu_geofence.testing.wait import eventually

pytestmark = pytest.mark.slow


def _recent(consumer: Consumer, back: int) -> int:
    """A number this consumer sent ``back`` packets ago, as its subscriber numbers them."""
    return (consumer.sender.next_sequence_number - back) & 0xFFFF


async def _history_of(call: Call, packets: int) -> None:
    producer = call.producer(call.publisher, "audio")
    await eventually(
        lambda: None if producer.packets_received > packets + 50 else "history still short", within=20
    )


async def _answered(consumer: Consumer, retransmissions: int) -> None:
    """Wait until the consumer has sent this many retransmissions (a barrier: RTCP is handled in order)."""
    await eventually(
        lambda: (
            None
            if consumer.retransmissions >= retransmissions
            else f"{consumer.retransmissions} retransmissions"
        ),
        within=10,
    )


async def _settled(consumer: Consumer) -> None:
    """Wait until the consumer's retransmission count has not moved for half a second."""
    last = -1
    while consumer.retransmissions != last:
        last = consumer.retransmissions
        await asyncio.sleep(0.5)


async def test_a_nack_naming_one_packet_fifty_times_is_answered_once(call: Call) -> None:
    consumer = call.consumer(call.publisher, "audio", call.attacker)
    receiver = call.receiver(call.attacker, call.publisher, "audio")
    ssrc = sender_ssrc(consumer.sender)
    await send_protected(receiver.transport, nack(1, ssrc, [(_recent(consumer, 5), 0)] * 50))
    await send_protected(receiver.transport, nack(1, ssrc, [(_recent(consumer, 6), 0)]))  # a barrier
    await _answered(consumer, 2)
    assert consumer.retransmissions == 2


async def test_a_nack_naming_hundreds_of_numbers_has_at_most_64_looked_at(call: Call) -> None:
    consumer = call.consumer(call.publisher, "audio", call.attacker)
    receiver = call.receiver(call.attacker, call.publisher, "audio")
    await _history_of(call, 100)
    ssrc = sender_ssrc(consumer.sender)
    first = _recent(consumer, 20 * 17)
    await send_protected(receiver.transport, nack(1, ssrc, [(first + 17 * i, 0xFFFF) for i in range(20)]))
    await send_protected(receiver.transport, nack(1, ssrc, [(_recent(consumer, 2), 0)]))  # a barrier
    await eventually(lambda: None if consumer.nacks_unanswerable else "not handled", within=10)
    await _answered(consumer, 1)
    looked_at = consumer.retransmissions + consumer.nacks_unanswerable
    assert looked_at <= MAX_NACK_ENTRIES + 1, looked_at  # 340 named, 64 + the barrier's one looked at
    assert consumer.nacks_over_budget >= 340 - MAX_NACK_ENTRIES


async def test_a_storm_of_nacks_buys_at_most_the_budget_and_the_others_are_still_answered(call: Call) -> None:
    consumer = call.consumer(call.publisher, "audio", call.attacker)
    receiver = call.receiver(call.attacker, call.publisher, "audio")
    await _history_of(call, MAX_NACK_ENTRIES)
    ssrc = sender_ssrc(consumer.sender)
    started = time.monotonic()
    for _ in range(20):  # each: the 64 most recent numbers, four entries of 16 + their pids
        first = _recent(consumer, MAX_NACK_ENTRIES)
        await send_protected(receiver.transport, nack(1, ssrc, [(first + 16 * i, 0x7FFF) for i in range(4)]))
    for _ in range(5):  # and the 1 172-byte packets of the measured storm
        await send_protected(receiver.transport, nack_storm_packet(1, ssrc, _recent(consumer, 30)))
    await _answered(consumer, int(RETRANSMISSION_BURST))
    await _settled(consumer)
    elapsed = time.monotonic() - started
    # 20 x 64 + 5 x 4 930 numbers asked for: the budget allows its burst plus its rate over the attack.
    assert consumer.retransmissions <= RETRANSMISSION_BURST + RETRANSMISSIONS_PER_SECOND * elapsed
    asked = 20 * MAX_NACK_ENTRIES + 5 * ((NACK_STORM_BYTES - 12) // 4) * 17
    assert consumer.nacks_over_budget + consumer.retransmissions + consumer.nacks_unanswerable == asked

    # The honest viewer's budget is its own: its NACK for the same producer is answered at once.
    honest = call.consumer(call.publisher, "audio", call.viewer)
    viewer_receiver = call.receiver(call.viewer, call.publisher, "audio")
    before = honest.retransmissions
    await send_protected(
        viewer_receiver.transport, nack(1, sender_ssrc(honest.sender), [(_recent(honest, 3), 0)])
    )
    await _answered(honest, before + 1)
    await call.advancing()


async def test_one_datagram_of_nacks_for_every_stream_buys_at_most_the_subscribers_budget(call: Call) -> None:
    # One compound RTCP datagram can carry a NACK for each stream a subscriber receives: with budgets
    # per consumer only, what it buys grows with the room (here 4 streams x 64 numbers, all answerable).
    consumers = [
        call.consumer(source, kind, call.attacker)
        for source in (call.publisher, call.viewer)
        for kind in ("audio", "video")
    ]
    for source in (call.publisher, call.viewer):
        for kind in ("audio", "video"):
            producer = call.producer(source, kind)
            await eventually(
                lambda p=producer: None if p.packets_received > 2 * MAX_NACK_ENTRIES else "history short",
                within=20,
            )
    transport = call.receiver(call.attacker, call.publisher, "audio").transport

    def handled() -> int:
        return sum(c.retransmissions + c.nacks_unanswerable + c.nacks_over_budget for c in consumers)

    before_handled = handled()
    before_sent = sum(c.retransmissions for c in consumers)
    datagram = b"".join(
        nack(1, sender_ssrc(c.sender), [(_recent(c, MAX_NACK_ENTRIES) + 16 * i, 0x7FFF) for i in range(4)])
        for c in consumers
    )
    started = time.monotonic()
    await send_protected(transport, datagram)
    asked = len(consumers) * MAX_NACK_ENTRIES
    await eventually(
        lambda: None if handled() - before_handled >= asked else "the NACKs are not handled yet",
        within=10,
        interval=0.005,
    )
    elapsed = time.monotonic() - started
    sent = sum(c.retransmissions for c in consumers) - before_sent
    assert sent <= SUBSCRIBER_RETRANSMISSION_BURST + SUBSCRIBER_RETRANSMISSIONS_PER_SECOND * elapsed, sent
    await call.advancing()
