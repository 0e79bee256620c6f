"""A participant's negotiations with a real aiortc client answering the SFU's offers (no signaling)."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiortc import RTCRtpTransceiver, RTCSessionDescription

from sfu_geofence.rtc.ice import IcePolicy, use_policy
from sfu_geofence.sfu import CloseReason, InvalidAnswer, Participant, Sfu, SfuConfig
from sfu_geofence.sfu.negotiation import DEFERRED_SPACING_S
from sfu_geofence.sfu.participant import TEARDOWN_DELAY_S, TEARDOWN_SPACING_S
from sfu_geofence.testing.channel import AnsweringClient
from sfu_geofence.testing.wait import eventually


@pytest.fixture
async def clients() -> AsyncIterator[Callable[[str], AnsweringClient]]:
    made: list[AnsweringClient] = []

    def make(address: str) -> AnsweringClient:
        made.append(AnsweringClient(address))
        return made[-1]

    try:
        yield make
    finally:
        for client in made:
            await client.pc.close()


async def test_a_subscription_made_while_an_offer_is_being_applied_is_negotiated_by_the_next_offer(
    sfu: Sfu, clients: Callable[[str], AnsweringClient]
) -> None:
    a_client, b_client = clients("127.0.50.1"), clients("127.0.50.2")
    a = sfu.join("r", "a", a_client.address, a_client.channel, publish=("audio",))
    await a_client.answer(a)
    assert a.published
    producer = a.producers["audio"]

    b = sfu.join("r", "b", b_client.address, b_client.channel, publish=("audio",))
    # Room.add subscribed B to A at once; undo that to make the subscription happen, as an
    # announcement can, while B's first offer is in setLocalDescription (which gathers ICE, and yields).
    b.unsubscribe(producer.id)
    set_local_description: Callable[[RTCSessionDescription], Awaitable[None]] = b.pc.setLocalDescription
    subscribed = []

    async def subscribe_meanwhile(description: RTCSessionDescription) -> None:
        await set_local_description(description)
        if not subscribed:
            subscribed.append(b.subscribe(producer))

    b.pc.setLocalDescription = subscribe_meanwhile  # type: ignore[method-assign]
    await b_client.answer(b)
    consumer = subscribed[0]
    assert consumer is not None
    # Its m-line was created after the first offer: the answer to that offer cannot activate it.
    assert not consumer.active
    await b_client.answer(b)
    assert consumer.active, "the subscription was never negotiated"
    assert consumer.mid is not None
    assert [t.producer for t in b_client.channel.offers[-1].tracks] == [producer.id]


async def test_offers_carry_only_opus_for_audio_and_vp8_or_h264_for_video(
    sfu: Sfu, clients: Callable[[str], AnsweringClient]
) -> None:
    client = clients("127.0.50.3")
    sfu.join("r", "c", client.address, client.channel, publish=("audio", "video"))
    await eventually(lambda: None if client.channel.offers else "no offer", within=15)
    rtpmaps = {
        line.split(" ", 1)[1].split("/")[0].lower()
        for line in client.channel.offers[0].sdp.splitlines()
        if line.startswith("a=rtpmap:")
    }
    assert rtpmaps == {"opus", "vp8", "h264", "rtx"}


async def test_participant_ids_are_random_and_unique(sfu: Sfu) -> None:
    ids = [sfu.new_participant_id() for _ in range(1000)]
    assert len(set(ids)) == len(ids)
    # Not a counter: consecutive ids share no long common prefix (sequential ids would reveal joins).
    shared = [
        next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), len(a))
        for a, b in itertools.pairwise(ids)
    ]
    assert max(shared) < 6


async def test_an_answer_with_a_lone_surrogate_is_an_invalid_answer(
    sfu: Sfu, clients: Callable[[str], AnsweringClient]
) -> None:
    # JSON can carry "\ud800", UTF-8 cannot: a host handing such an answer over gets the documented
    # InvalidAnswer, not whatever encoding it first raises.
    client = clients("127.0.0.61")
    participant = sfu.join("r", "surrogate", client.address, client.channel, publish=("audio",))
    await eventually(lambda: None if client.channel.offers else "no offer", within=15)
    with use_policy(IcePolicy(bind=(client.address,))):  # loopback only, as AnsweringClient does
        await client.pc.setRemoteDescription(
            RTCSessionDescription(sdp=client.channel.offers[0].sdp, type="offer")
        )
        await client.pc.setLocalDescription(await client.pc.createAnswer())
    sdp = client.pc.localDescription.sdp.replace("s=-", "s=\ud800", 1)
    with pytest.raises(InvalidAnswer, match="Unicode"):
        await participant.handle_answer(sdp)


async def settled_room(
    sfu: Sfu, clients: Callable[[str], AnsweringClient], names: tuple[str, ...], network: str
) -> tuple[dict[str, AnsweringClient], dict[str, Participant]]:
    """``names`` joined room "r" (audio), from ``network``.1, .2..., every offer answered."""
    answering = {name: clients(f"{network}.{i + 1}") for i, name in enumerate(names)}
    participants = {}
    for name, client in answering.items():
        participants[name] = sfu.join("r", name, client.address, client.channel, publish=("audio",))
        await client.answer(participants[name])
    quiet = 0
    while quiet < 3:  # answer the re-offers the later joins caused, until none comes for a while
        await asyncio.sleep(0.05)
        pending = [name for name in names if participants[name].awaiting_answer]
        quiet = 0 if pending else quiet + 1
        for name in pending:
            await answering[name].answer(participants[name])
    return answering, participants


@pytest.fixture
async def renegotiating_sfu() -> AsyncIterator[Sfu]:
    """An SFU as ``serve --renegotiate-on-leave`` runs it: a removal makes offers that only retire
    m-lines (``SfuConfig.fold_retirements`` off)."""
    the_sfu = Sfu(SfuConfig(ice=IcePolicy(bind=("127.0.0.1",)), fold_retirements=False))
    try:
        yield the_sfu
    finally:
        await the_sfu.close()


async def test_after_a_removal_the_others_are_renegotiated_in_deferred_offers_spaced_apart(
    renegotiating_sfu: Sfu, clients: Callable[[str], AnsweringClient]
) -> None:
    # The removed participant's media stops at once; the offers that only retire its m-lines are
    # spread out so that they, and the clients' answers, do not all want the CPU at the same moment.
    sfu = renegotiating_sfu
    names = ("a", "b", "c", "d")
    answering, participants = await settled_room(sfu, clients, names, "127.0.52")
    offers_before = {name: len(answering[name].channel.offers) for name in names[:3]}
    removed_at = time.monotonic()
    sfu.remove_participant(participants["d"].id, CloseReason.EJECTED, "test")
    for name in names[:3]:
        assert not participants[name].consumers.get(participants["d"].producers["audio"].id)
        channel = answering[name].channel
        await eventually(
            lambda c=channel, n=offers_before[name]: None if len(c.offers) > n else "no re-offer", within=15
        )
    times = sorted(answering[name].channel.offered_at[offers_before[name]] for name in names[:3])
    # (asyncio may fire a timer up to its clock's resolution early: 1 ms of slack)
    assert all(b - a >= DEFERRED_SPACING_S - 0.001 for a, b in itertools.pairwise([removed_at, *times]))


async def test_a_removed_participants_connection_is_torn_down_in_negotiation_turns(
    sfu: Sfu, clients: Callable[[str], AnsweringClient]
) -> None:
    # Closed in one go, a connection stops all its transceivers and transports in the same few loop
    # iterations as the offers and answers the removal causes. The teardown takes negotiation turns
    # instead, one step each: while an offer or an answer holds the turn, nothing of it runs.
    _, participants = await settled_room(sfu, clients, ("a", "b", "c"), "127.0.54")
    removed = participants["c"]
    transceivers = removed.pc.getTransceivers()
    assert len(transceivers) == 3
    async with sfu.negotiations.turn():
        closing = removed.close(CloseReason.EJECTED, "test")
        for _ in range(20):
            await asyncio.sleep(0)
        assert not any(t.stopped for t in transceivers)
        assert removed.pc.connectionState == "connected"
    await closing
    assert all(t.stopped for t in transceivers)
    assert removed.pc.connectionState == "closed"


async def test_a_removed_participants_connection_is_torn_down_later_and_a_step_at_a_time(
    sfu: Sfu, clients: Callable[[str], AnsweringClient]
) -> None:
    # Its media stopped at once; the teardown waits out the removal's own moment, then spaces its
    # steps, so that its CPU never adds up to a gap in the media of those who stay.
    _, participants = await settled_room(sfu, clients, ("a", "b", "c"), "127.0.56")
    removed = participants["c"]
    stopped: list[float] = []
    for transceiver in removed.pc.getTransceivers():
        stop: Callable[[], Awaitable[None]] = transceiver.stop

        async def timed(
            stop: Callable[[], Awaitable[None]] = stop, t: RTCRtpTransceiver = transceiver
        ) -> None:
            if not t.stopped:  # the close stops each again, a no-op
                stopped.append(time.monotonic())
            await stop()

        transceiver.stop = timed  # type: ignore[method-assign]
    removed_at = time.monotonic()
    sfu.remove_participant(removed.id, CloseReason.EJECTED, "test")
    assert not any(
        c.producer.participant_id == removed.id for p in participants.values() for c in p.consumers.values()
    )
    await sfu.drain()
    assert len(stopped) == 3
    assert removed.pc.connectionState == "closed"
    # (asyncio may fire a timer up to its clock's resolution early: 1 ms of slack)
    assert stopped[0] - removed_at >= TEARDOWN_DELAY_S - 0.001
    assert all(b - a >= TEARDOWN_SPACING_S - 0.001 for a, b in itertools.pairwise(stopped))


async def test_a_removal_makes_no_offer_and_the_next_offer_retires_its_m_line(
    sfu: Sfu, clients: Callable[[str], AnsweringClient]
) -> None:
    # By default (SfuConfig.fold_retirements) the others' m-lines of a removed participant (whose
    # media stopped at once) go inactive in their next offer due for another reason, here a join's
    # subscription: the removal costs the others no renegotiation of its own.
    assert sfu.config.fold_retirements
    answering, participants = await settled_room(sfu, clients, ("a", "b", "c"), "127.0.55")
    channel = answering["a"].channel
    offers_before = len(channel.offers)
    assert "a=inactive" not in channel.offers[-1].sdp
    sfu.remove_participant(participants["c"].id, CloseReason.EJECTED, "test")
    await asyncio.sleep(10 * DEFERRED_SPACING_S)  # renegotiating on leave: two offers by now
    assert len(channel.offers) == offers_before
    assert not participants["a"].awaiting_answer
    assert participants["a"].m_lines.retiring() == 1

    newcomer = clients("127.0.55.4")
    await newcomer.answer(sfu.join("r", "d", newcomer.address, newcomer.channel, publish=("audio",)))
    await eventually(lambda: None if len(channel.offers) > offers_before else "no offer", within=15)
    assert channel.offers[offers_before].sdp.count("a=inactive") == 1


async def test_answers_that_arrive_together_are_applied_in_separate_loop_iterations(
    renegotiating_sfu: Sfu, clients: Callable[[str], AnsweringClient]
) -> None:
    # Renegotiating on leave, an ejection makes every remaining participant renegotiate (so does a
    # join); their answers then arrive in one read of the sockets. Applied back to back they would
    # hold the event loop (and every forwarded packet) for their sum: "packets" stands for what the
    # loop reads between two iterations.
    sfu = renegotiating_sfu
    names = ("a", "b", "c", "d")
    answering, participants = await settled_room(sfu, clients, names, "127.0.51")

    sfu.remove_participant(participants["d"].id, CloseReason.EJECTED, "test")
    staying = names[:3]
    answers = {}
    for name in staying:
        client = answering[name]
        await eventually(
            lambda c=client: None if len(c.channel.offers) > c.answered else "no re-offer", within=15
        )
        offer = client.channel.offers[client.answered]
        await client.pc.setRemoteDescription(RTCSessionDescription(sdp=offer.sdp, type="offer"))
        await client.pc.setLocalDescription(await client.pc.createAnswer())
        client.answered += 1
        answers[name] = client.pc.localDescription.sdp

    history: list[str] = []
    loop = asyncio.get_running_loop()
    for name in staying:
        participant = participants[name]
        apply: Callable[[RTCSessionDescription], Awaitable[None]] = participant.pc.setRemoteDescription

        async def recorded(
            description: RTCSessionDescription,
            name: str = name,
            apply: Callable[[RTCSessionDescription], Awaitable[None]] = apply,
        ) -> None:
            history.append(f"apply {name}")
            loop.call_soon(history.append, "packets")
            await apply(description)

        participant.pc.setRemoteDescription = recorded  # type: ignore[method-assign]
    await asyncio.gather(*(participants[name].handle_answer(answers[name]) for name in staying))
    assert sorted(h for h in history if h != "packets") == ["apply a", "apply b", "apply c"]
    assert all(x == "packets" or y == "packets" for x, y in itertools.pairwise(history)), history


async def test_an_answer_whose_fingerprint_is_at_session_level_is_applied(
    sfu: Sfu, clients: Callable[[str], AnsweringClient]
) -> None:
    # RFC 8122 allows a=fingerprint (and a=setup) for the whole session, before the first m-line.
    client = clients("127.0.52.1")
    participant = sfu.join("r", "a", client.address, client.channel, publish=("audio", "video"))
    await eventually(lambda: None if client.channel.offers else "no offer", within=15)
    offer = RTCSessionDescription(sdp=client.channel.offers[0].sdp, type="offer")
    with use_policy(IcePolicy(bind=(client.address,))):
        await client.pc.setRemoteDescription(offer)
        await client.pc.setLocalDescription(await client.pc.createAnswer())
    lines = client.pc.localDescription.sdp.splitlines()
    fingerprints = [line for line in lines if line.startswith(("a=fingerprint:", "a=setup:"))]
    media = [line for line in lines if not line.startswith(("a=fingerprint:", "a=setup:"))]
    first_media = next(i for i, line in enumerate(media) if line.startswith("m="))
    session_level = [*media[:first_media], *dict.fromkeys(fingerprints), *media[first_media:]]
    await participant.handle_answer("\r\n".join(session_level) + "\r\n")
    assert participant.published
    await eventually(
        lambda: None if participant.pc.connectionState == "connected" else "not connected", within=15
    )
    assert client.channel.ended == []
