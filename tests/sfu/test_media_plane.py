"""Rooms of real aiortc peers, each on its own loopback address, forwarding through the SFU."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiortc import RTCRtpReceiver
from aiortc.rtp import RTCP_PSFB_APP, RtcpPsfbPacket, RtcpSrPacket, RtpPacket, unpack_remb_fci

from sfu_geofence.protocol import EjectedMessage, ParticipantLeft
from sfu_geofence.rtc.access import sender_ssrc
from sfu_geofence.rtc.fanout import FANOUT_ENV
from sfu_geofence.rtc.ice import SelectedPair
from sfu_geofence.rtc.tap import ReceiverTap, tap_of
from sfu_geofence.sfu import CloseReason, Consumer, Participant, Producer, SfuObserver
from sfu_geofence.sfu.negotiation import DEFERRED_SPACING_S
from sfu_geofence.synthetic.client import AUDIO_INTERVAL, VIDEO_INTERVAL, SyntheticPeer, synthetic_tracks
from sfu_geofence.testing.clock import ScheduledClock
from sfu_geofence.testing.process import spawn_module, stop
from sfu_geofence.testing.server import Served
from sfu_geofence.testing.wait import eventually


def _receives_everyone(peers: Sequence[SyntheticPeer], minimum_frames: int = 10) -> Callable[[], str | None]:
    """Every peer receives audio and video frames from every other peer."""

    def check() -> str | None:
        for peer in peers:
            for other in peers:
                if other is peer:
                    continue
                for kind in ("audio", "video"):
                    counters = peer.meters(str(other.participant_id), kind)
                    if not counters or counters[0].frames < minimum_frames:
                        frames = counters[0].frames if counters else "no track"
                        return f"{peer.name} has {frames} {kind} frames from {other.name}"
        return None

    return check


def _frames(
    peers: Sequence[SyntheticPeer], sources: Sequence[SyntheticPeer]
) -> dict[tuple[str, str, str], int]:
    return {
        (peer.name, source.name, kind): peer.meters(str(source.participant_id), kind)[0].frames
        for peer in peers
        for source in sources
        if source is not peer
        for kind in ("audio", "video")
    }


def _max_gaps(
    peers: Sequence[SyntheticPeer], sources: Sequence[SyntheticPeer], since: float
) -> dict[str, float]:
    """Longest gap (s) between frames that arrived after ``since``, per kind, ``sources`` to ``peers``."""
    gaps = {"audio": 0.0, "video": 0.0}
    for peer in peers:
        for source in sources:
            if source is peer:
                continue
            for kind in gaps:
                for meter in peer.meters(str(source.participant_id), kind):
                    gaps[kind] = max(gaps[kind], meter.gap_stats(since).max_ms / 1000)
    print(f"max gaps (ms): audio {gaps['audio'] * 1000:.1f}, video {gaps['video'] * 1000:.1f}")
    return gaps


async def _advancing(peers: Sequence[SyntheticPeer], sources: Sequence[SyntheticPeer], frames: int) -> None:
    """Wait until every stream between them has advanced by ``frames`` frames."""
    before = _frames(peers, sources)

    def check() -> str | None:
        now = _frames(peers, sources)
        stuck = [key for key, count in now.items() if count < before[key] + frames]
        return f"streams not advancing: {stuck}" if stuck else None

    await eventually(check, within=15)


def _producers(served: Served) -> list[Producer]:
    return [p for participant in served.sfu.participants.values() for p in participant.producers.values()]


# Frame gaps are measured in scheduled time: what this test process spent waiting for a CPU on a
# shared machine is not the SFU's doing (see sfu_geofence.testing.clock).
CLOCK = ScheduledClock()


def _peer(served: Served, room: str, address: str, name: str) -> SyntheticPeer:
    return SyntheticPeer(served.url, room, address, name=name, tracks=synthetic_tracks(), clock=CLOCK)


@asynccontextmanager
async def _full_mesh(
    served: Served, room: str, network: str, names: str
) -> AsyncIterator[list[SyntheticPeer]]:
    """Publishing peers named ``{names}0..2`` from ``{network}.1..3``, each receiving every other."""
    peers = [_peer(served, room, f"{network}.{i + 1}", f"{names}{i}") for i in range(3)]
    try:
        for peer in peers:
            await peer.join()
        await eventually(_receives_everyone(peers), within=20)
        yield peers
    finally:
        for peer in peers:
            await peer.close()


@pytest.fixture
async def room(served: Served) -> AsyncIterator[list[SyntheticPeer]]:
    async with _full_mesh(served, "room-a", "127.0.10", "peer") as peers:
        yield peers


@pytest.mark.slow
@pytest.mark.usefixtures("c_fanout")
async def test_started_consumers_forward_through_the_c_fanout(
    served: Served, room: list[SyntheticPeer]
) -> None:
    await _advancing(room, room, frames=10)
    producers = _producers(served)
    assert all(len(p.consumers) == 2 and set(p.consumers_in_c) == set(p.consumers) for p in producers)
    before = {c: c.packets_forwarded for p in producers for c in p.consumers}
    await _advancing(room, room, frames=10)  # what they deliver now, the C code sent
    assert all(c.packets_forwarded > before[c] for c in before)


@pytest.mark.slow
async def test_with_the_c_fanout_switched_off_every_packet_takes_the_python_path(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(FANOUT_ENV, "python")
    async with _full_mesh(served, "room-python", "127.0.11", "py") as peers:
        await _advancing(peers, peers, frames=20)
        producers = _producers(served)
        assert all(len(p.consumers) == 2 and p.consumers_in_c == () for p in producers)
        assert all(c.packets_forwarded > 0 for p in producers for c in p.consumers)


@pytest.mark.slow
async def test_three_participants_each_receive_every_other_participants_audio_and_video(
    served: Served, room: list[SyntheticPeer]
) -> None:
    await _advancing(room, room, frames=20)
    producers = _producers(served)
    assert sorted(p.kind for p in producers) == ["audio"] * 3 + ["video"] * 3
    # Each producer forwards to the two other participants, through consumers that really sent packets.
    assert all(len(p.consumers) == 2 for p in producers)
    assert all(c.packets_forwarded > 0 for p in producers for c in p.consumers)
    # Nothing in this process (SFU or peers) ever decoded: aiortc's decoder threads never started.
    assert [t.name for t in threading.enumerate() if t.name.endswith("-decoder")] == []
    # Each peer is told who the others are, and never anything about their addresses.
    for peer in room:
        joined = next(m for m in peer.messages if m["type"] == "joined")
        assert set(joined) == {"type", "participant", "room", "participants"}
        assert all("127." not in str(m) for m in peer.messages if m["type"] != "joined")


@pytest.mark.slow
async def test_a_clean_leave_leaves_the_others_media_running(
    served: Served, room: list[SyntheticPeer]
) -> None:
    leaver, stayers = room[0], room[1:]
    offers = {stayer.name: stayer.offers for stayer in stayers}
    since = CLOCK()
    await leaver.leave()
    assert leaver.close_code == 1000
    await eventually(
        lambda: None if str(leaver.participant_id) not in served.sfu.participants else "still in", within=5
    )
    await _advancing(stayers, stayers, frames=int(2 / VIDEO_INTERVAL))  # ~2 s more of every stream
    gaps = _max_gaps(stayers, stayers, since)
    assert gaps["video"] <= 3 * VIDEO_INTERVAL, gaps
    assert gaps["audio"] <= 3 * AUDIO_INTERVAL, gaps
    for stayer in stayers:
        left = [m for m in stayer.messages if m["type"] == "participant-left"]
        assert left == [ParticipantLeft(str(leaver.participant_id), leaver.name).to_message()]
        # The leaver's tracks are gone from the stayer's live tracks (participant-left says so)...
        assert {t.participant for t in stayer.live_tracks()} == {s.participant_id for s in stayers} - {
            stayer.participant_id
        }
        # ...and the leave cost the stayer no renegotiation: its two m-lines of the leaver went inactive
        # in the SFU and wait for the next offer made for another reason (SfuConfig.fold_retirements).
        assert stayer.offers == offers[stayer.name]
        assert served.sfu.participants[str(stayer.participant_id)].m_lines.retiring() == 2


@pytest.mark.slow
@pytest.mark.parametrize(
    "how",
    [
        pytest.param(signal.SIGKILL, id="killed (its kernel closes the WebSocket)"),
        pytest.param(signal.SIGSTOP, id="frozen (only the WebSocket heartbeat notices)"),
    ],
)
async def test_a_participant_that_vanishes_is_removed_within_5_s_and_the_others_media_keeps_running(
    served: Served, room: list[SyntheticPeer], how: signal.Signals
) -> None:
    process = await spawn_module(
        "sfu_geofence.synthetic.client", served.url, "room-a", "127.0.20.1", "--name", "doomed"
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode().split()
        assert line[0] == "joined", line
        doomed = line[1]

        def everyone_receives_the_doomed() -> str | None:
            for peer in room:
                for kind in ("audio", "video"):
                    counters = peer.meters(doomed, kind)
                    if not counters or counters[0].frames < 10:
                        return f"{peer.name} has not received {kind} from the doomed peer yet"
            return None

        await eventually(everyone_receives_the_doomed, within=20)
        since = CLOCK()
        process.send_signal(how)
        killed_at = time.monotonic()
        await eventually(
            lambda: None if doomed not in served.sfu.participants else "still in the room", within=5
        )
        assert time.monotonic() - killed_at < 5
        await _advancing(room, room, frames=int(2 / VIDEO_INTERVAL))
        gaps = _max_gaps(room, room, since)
        assert gaps["video"] <= 3 * VIDEO_INTERVAL, gaps
        assert gaps["audio"] <= 3 * AUDIO_INTERVAL, gaps
        for peer in room:
            assert ParticipantLeft(doomed, "doomed").to_message() in peer.messages
    finally:
        await stop(process)


class _Recorder(SfuObserver):
    def __init__(self) -> None:
        self.history: list[tuple[str, str]] = []
        self.pairs: list[tuple[str, SelectedPair]] = []

    def participant_joined(self, participant: Participant) -> None:
        self.history.append(("joined", participant.name))

    def participant_left(self, participant: Participant, reason: CloseReason, detail: str) -> None:
        self.history.append(("left", f"{participant.name} {reason.value} {detail}"))

    def selected_pair_changed(self, participant: Participant, pair: SelectedPair) -> None:
        self.pairs.append((participant.name, pair))


@pytest.mark.slow
async def test_removing_one_participant_tells_it_why_and_the_others_only_that_it_left(served: Served) -> None:
    recorder = _Recorder()
    served.sfu.observer.observers.append(recorder)
    async with _full_mesh(served, "room-b", "127.0.30", "p") as peers:
        target, others = peers[1], [peers[0], peers[2]]
        since = CLOCK()
        removed = served.sfu.participants[str(target.participant_id)]
        assert served.sfu.remove_participant(
            str(target.participant_id), CloseReason.EJECTED, "not allowed here"
        )
        assert not served.sfu.remove_participant(str(target.participant_id), CloseReason.EJECTED, "twice")
        await asyncio.wait_for(target.closed.wait(), 5)
        assert target.close_code == 4409
        assert target.messages[-1] == EjectedMessage("not allowed here").to_message()
        await eventually(
            lambda: None if removed.pc.connectionState == "closed" else "connection open", within=5
        )
        assert all(p.closed for p in removed.producers.values())
        assert removed.consumers == {}
        survivors = [served.sfu.participants[str(o.participant_id)] for o in others]
        assert all(p.id not in s.consumers for s in survivors for p in removed.producers.values())
        assert all(len(s.consumers) == 2 for s in survivors)  # each other's audio and video, untouched
        await _advancing(others, others, frames=int(2 / VIDEO_INTERVAL))
        gaps = _max_gaps(others, others, since)
        assert gaps["video"] <= 3 * VIDEO_INTERVAL, gaps
        assert gaps["audio"] <= 3 * AUDIO_INTERVAL, gaps
        for other in others:
            assert ParticipantLeft(str(target.participant_id), "p1").to_message() in other.messages
            assert "not allowed here" not in str(other.messages)
        assert recorder.history == [
            ("joined", "p0"),
            ("joined", "p1"),
            ("joined", "p2"),
            ("left", "p1 ejected not allowed here"),
        ]
        # The selected pair of every participant was reported, with its own loopback address.
        assert {name: pair.remote_address[0] for name, pair in recorder.pairs} == {
            "p0": "127.0.30.1",
            "p1": "127.0.30.2",
            "p2": "127.0.30.3",
        }
        assert all(pair.remote_type == "host" and not pair.relayed for _, pair in recorder.pairs)


def _receiver_for(peer: SyntheticPeer, producer_id: str) -> tuple[RTCRtpReceiver, ReceiverTap]:
    assert peer.pc is not None
    mid = peer.received[producer_id].mid
    receiver = next(t.receiver for t in peer.pc.getTransceivers() if t.mid == mid)
    tap = tap_of(receiver)
    assert tap is not None
    return receiver, tap


@pytest.mark.slow
async def test_subscriber_feedback_reaches_the_sfu_and_the_publisher(
    served: Served, room: list[SyntheticPeer]
) -> None:
    publisher, subscriber = room[0], room[1]
    producer = served.sfu.participants[str(publisher.participant_id)].producers["video"]
    consumer = next(c for c in producer.consumers if c.subscriber_id == subscriber.participant_id)
    receiver, tap = _receiver_for(subscriber, producer.id)
    assert tap.media_ssrc is not None

    # A NACK for a recent packet is answered from the SFU's history, as the subscriber numbered it.
    meter = subscriber.received[producer.id].meter
    lost = (consumer.sender.next_sequence_number - 5) & 0xFFFF  # as the subscriber numbers them
    packets_before = meter.packets
    await receiver._send_rtcp_nack(tap.media_ssrc, [lost])
    await eventually(lambda: None if consumer.retransmissions == 1 else "no retransmission", within=5)
    await eventually(lambda: None if meter.packets > packets_before else "nothing received", within=5)

    # A PLI from the subscriber becomes a (rate-limited) PLI to the publisher.
    assert publisher.pc is not None
    publisher_sender = next(
        t.sender for t in publisher.pc.getTransceivers() if t.sender.track is publisher.tracks[1]
    )
    keyframe_requests: list[float] = []
    publisher_sender._send_keyframe = lambda: keyframe_requests.append(time.monotonic())  # type: ignore[method-assign]
    for _ in range(5):
        await tap.request_keyframe()
    await eventually(
        lambda: None if keyframe_requests else "no keyframe request reached the publisher", within=5
    )
    await asyncio.sleep(1.5)
    assert 1 <= len(keyframe_requests) <= 2  # five requests within the limit's window merge

    # The SFU estimates the bandwidth it receives and tells the publisher (REMB), as aiortc does.
    publisher_video = next(
        t.sender for t in publisher.pc.getTransceivers() if t.sender.track is publisher.tracks[1]
    )
    estimates: list[int] = []
    original_feedback = publisher_video._handle_rtcp_packet

    async def record_remb(packet: object) -> None:
        if isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_APP:
            estimates.append(unpack_remb_fci(packet.fci)[0])
        await original_feedback(packet)  # type: ignore[arg-type]

    publisher_video._handle_rtcp_packet = record_remb  # type: ignore[method-assign,assignment]
    await eventually(lambda: None if estimates else "no REMB reached the publisher", within=10)
    assert estimates[-1] > 0

    # Sender reports from the SFU count what it forwarded to this subscriber.
    reports: list[RtcpSrPacket] = []
    original = receiver._handle_rtcp_packet

    async def record(packet: object) -> None:
        if isinstance(packet, RtcpSrPacket):
            reports.append(packet)
        await original(packet)  # type: ignore[arg-type]

    receiver._handle_rtcp_packet = record  # type: ignore[method-assign,assignment]
    await eventually(lambda: None if reports else "no sender report", within=5)
    report = reports[-1]
    assert report.ssrc == sender_ssrc(consumer.sender)
    assert 0 < report.sender_info.packet_count <= consumer.sender.packets_sent
    assert report.sender_info.ntp_timestamp > 0


@pytest.mark.slow
async def test_sender_reports_come_every_second_for_video_and_every_five_for_audio(
    served: Served, room: list[SyntheticPeer]
) -> None:
    """libwebrtc's intervals (randomized over 0.5-1.5x, as RFC 3550 asks), not the stock 1 s for both:
    in 5 s, a video line sends at least 3 (intervals of at most 1.5 s), an audio line at most 2 (at
    least 2.5 s apart); with the stock loop audio would send at least 3."""
    publisher, subscriber = room[0], room[1]
    producers = served.sfu.participants[str(publisher.participant_id)].producers
    reports: dict[str, int] = {"audio": 0, "video": 0}
    for kind in reports:
        receiver, _ = _receiver_for(subscriber, producers[kind].id)
        original = receiver._handle_rtcp_packet

        async def count(packet: object, kind: str = kind, original: Any = original) -> None:
            if isinstance(packet, RtcpSrPacket):
                reports[kind] += 1
            await original(packet)

        receiver._handle_rtcp_packet = count  # type: ignore[method-assign]
    await asyncio.sleep(5)
    assert reports["video"] >= 3, reports
    assert reports["audio"] <= 2, reports


@pytest.mark.slow
async def test_a_leavers_m_lines_are_retired_by_the_next_join_and_reused_by_the_one_after(
    served: Served, room: list[SyntheticPeer]
) -> None:
    # A leave makes no offer of its own (SfuConfig.fold_retirements): the leaver's m-lines go inactive
    # in the offer the next join causes anyway, and are free once that offer is answered.
    leaver, stayers = room[0], room[1:]
    sfu_side = [served.sfu.participants[str(s.participant_id)] for s in stayers]
    lines_before = [len(p.pc.getTransceivers()) for p in sfu_side]
    leaver_mids = [
        {r.mid for r in s.received.values() if r.participant == leaver.participant_id} for s in stayers
    ]
    await leaver.leave()
    await eventually(
        lambda: None if str(leaver.participant_id) not in served.sfu.participants else "still in", within=5
    )
    await asyncio.sleep(20 * DEFERRED_SPACING_S)  # renegotiating on leave: freed by now
    assert all(p.m_lines.retiring() == 2 for p in sfu_side)
    assert all(p.m_lines.reusable() == 0 for p in sfu_side)

    def freed() -> str | None:
        # The m-lines become reusable once an offer showing them inactive has been answered.
        return None if all(p.m_lines.reusable() == 2 for p in sfu_side) else "m-lines not freed yet"

    first = _peer(served, "room-a", "127.0.10.9", "newcomer")
    second = _peer(served, "room-a", "127.0.10.10", "second-newcomer")
    try:
        await first.join()
        await eventually(_receives_everyone([*stayers, first]), within=20)
        await eventually(freed, within=10)
        # The first newcomer's media took new m-lines: the leaver's were still retiring.
        assert [len(p.pc.getTransceivers()) for p in sfu_side] == [n + 2 for n in lines_before]
        await second.join()
        await eventually(_receives_everyone([*stayers, first, second]), within=20)
        # The second newcomer's media took the leaver's m-lines, no new ones.
        assert [len(p.pc.getTransceivers()) for p in sfu_side] == [n + 2 for n in lines_before]
        second_mids = [
            {r.mid for r in s.received.values() if r.participant == second.participant_id} for s in stayers
        ]
        assert second_mids == leaver_mids
    finally:
        await second.close()
        await first.close()


class _Raising(SfuObserver):
    """An application's observer with a bug: it raises while the SFU removes someone."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def consumer_closed(self, consumer: Consumer) -> None:
        self.calls.append("consumer_closed")
        raise RuntimeError("observer bug")

    def participant_left(self, participant: Participant, reason: CloseReason, detail: str) -> None:
        self.calls.append("participant_left")
        raise RuntimeError("observer bug")


@pytest.mark.slow
async def test_an_observer_that_raises_disturbs_neither_a_removal_nor_the_others_media_nor_close(
    served: Served, room: list[SyntheticPeer], caplog: pytest.LogCaptureFixture
) -> None:
    raising, recorder = _Raising(), _Recorder()
    served.sfu.observer.observers.extend([raising, recorder])  # the recorder comes after the bug
    target, others = room[0], room[1:]
    removed = served.sfu.participants[str(target.participant_id)]
    assert served.sfu.remove_participant(str(target.participant_id), CloseReason.EJECTED, "go")
    # Fully removed: out of the SFU and its room, its producers closed, nobody consuming them.
    assert str(target.participant_id) not in served.sfu.rooms["room-a"].participants
    assert all(p.closed and p.consumers == () for p in removed.producers.values())
    survivors = [served.sfu.participants[str(o.participant_id)] for o in others]
    assert all(len(s.consumers) == 2 for s in survivors)
    assert "participant_left" in raising.calls
    assert "consumer_closed" in raising.calls
    assert recorder.history == [("left", "peer0 ejected go")]  # later observers still hear of it
    assert "observer bug" in caplog.text
    await asyncio.wait_for(target.closed.wait(), 5)
    assert target.close_code == 4409
    await _advancing(others, others, frames=10)
    await served.sfu.close()  # every removal calls the raising observer again: close completes
    assert served.sfu.participants == {}
    assert served.sfu.rooms == {}


@pytest.mark.slow
async def test_packets_on_ssrcs_the_publisher_did_not_signal_are_dropped_and_remembered_nowhere(
    served: Served, room: list[SyntheticPeer]
) -> None:
    publisher, subscriber = room[0], room[1]
    producer = served.sfu.participants[str(publisher.participant_id)].producers["audio"]
    receiver = producer.receiver
    signalled = set(receiver._inbound.ssrcs)
    media_ssrc = receiver.media_ssrc
    assert media_ssrc in signalled
    router = receiver.transport._rtp_router
    table_size = len(router.ssrc_table)
    assert publisher.pc is not None
    sender = next(t.sender for t in publisher.pc.getTransceivers() if t.sender.track is publisher.tracks[0])
    payload_type = next(pt for pt, c in producer.codecs.items() if c.mimeType == "audio/opus")
    # The publisher's own DTLS transport sends, SRTP-protected, 100 packets on as many new SSRCs.
    foreign = [0x10000000 + i for i in range(100)]
    for i, ssrc in enumerate(foreign):
        packet = RtpPacket(payload_type=payload_type, sequence_number=i, timestamp=960 * i, ssrc=ssrc)
        packet.payload = b"\xfc" + bytes(40)
        await sender.transport._send_rtp(packet.serialize())
    await eventually(
        lambda: None if receiver.foreign_packets == len(foreign) else f"{receiver.foreign_packets} dropped",
        within=10,
    )
    assert receiver._inbound.ssrcs == signalled
    assert set(receiver._inbound.streams) <= signalled
    assert len(router.ssrc_table) == table_size
    assert receiver.media_ssrc == media_ssrc
    await _advancing([subscriber], [publisher], frames=10)  # the real stream goes on


@pytest.mark.slow
async def test_a_nack_for_a_packet_sent_before_the_consumer_started_is_not_answered(
    served: Served, room: list[SyntheticPeer]
) -> None:
    publisher = room[0]
    audio = served.sfu.participants[str(publisher.participant_id)].producers["audio"]
    newcomer = _peer(served, "room-a", "127.0.10.8", "newcomer")
    try:
        await newcomer.join()
        await eventually(_receives_everyone([*room, newcomer]), within=20)
        consumer = next(c for c in audio.consumers if c.subscriber_id == newcomer.participant_id)
        receiver, tap = _receiver_for(newcomer, audio.id)
        assert tap.media_ssrc is not None
        # As the subscriber numbers them, the sequence number just before its first packet: on a
        # recycled m-line it is the previous producer's packet; the history holds another packet there.
        continuity = consumer.continuity
        before_start = (continuity.first_sequence_number - 1) & 0xFFFF
        assert continuity.sequence_offset is not None
        assert audio.from_history((before_start - continuity.sequence_offset) & 0xFFFF) is not None
        await receiver._send_rtcp_nack(tap.media_ssrc, [before_start])
        await eventually(lambda: None if consumer.nacks_unanswerable else "NACK not handled", within=5)
        assert consumer.retransmissions == 0
    finally:
        await newcomer.close()
