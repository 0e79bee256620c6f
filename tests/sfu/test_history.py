"""A producer's NACK history: the last 2 048 packets by sequence number, as raw fields."""

from __future__ import annotations

import gc

from aiortc.rtp import RtpPacket

from sfu_geofence.sfu.history import HISTORY_SIZE, PacketHistory, StoredPacket


def _packet(sequence_number: int, *, marker: int = 0, padding: int = 0) -> RtpPacket:
    packet = RtpPacket(
        payload_type=96, marker=marker, sequence_number=sequence_number, timestamp=0xFFFFFFF0, ssrc=1
    )
    packet.payload = sequence_number.to_bytes(2, "big") * 10
    packet.padding_size = padding
    return packet


def test_a_packet_comes_back_with_every_field_a_retransmission_needs() -> None:
    history = PacketHistory()
    history.add(_packet(65535, marker=1, padding=3))
    assert history.get(65535) == StoredPacket(65535, 0xFFFFFFF0, 96, 1, b"\xff\xff" * 10, 3)


def test_a_slot_reused_by_a_newer_number_no_longer_answers_for_the_old_one() -> None:
    history = PacketHistory()
    history.add(_packet(5))
    history.add(_packet(5 + HISTORY_SIZE))
    assert history.get(5) is None
    stored = history.get(5 + HISTORY_SIZE)
    assert stored is not None
    assert stored.payload == (5 + HISTORY_SIZE).to_bytes(2, "big") * 10


def test_clear_forgets_everything() -> None:
    history = PacketHistory()
    history.add(_packet(7))
    history.clear()
    assert history.get(7) is None
    assert history.get(0) is None


def test_a_full_history_keeps_no_object_the_garbage_collector_tracks_per_packet() -> None:
    history = PacketHistory()
    for n in range(HISTORY_SIZE):
        history.add(_packet(n))
    gc.collect()
    referents = gc.get_referents(*(getattr(history, name) for name in PacketHistory.__slots__))
    assert [r for r in referents if gc.is_tracked(r) and not isinstance(r, type)] == []
