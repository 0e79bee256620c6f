"""Offers are made one participant at a time, with the event loop served in between."""

from __future__ import annotations

import asyncio
import itertools

from sfu_geofence.sfu.negotiation import NegotiationScheduler


class _Recorder:
    def __init__(self, id: str, history: list[str], fail: bool = False) -> None:
        self.id = id
        self._history = history
        self._fail = fail

    async def make_offer(self) -> None:
        self._history.append(f"offer {self.id}")
        if self._fail:
            raise RuntimeError("broken")


async def test_offers_are_made_in_turn_once_each_and_other_tasks_run_between_them() -> None:
    history: list[str] = []
    scheduler = NegotiationScheduler()
    participants = [_Recorder(name, history, fail=name == "b") for name in "abc"]
    for participant in [*participants, participants[0]]:  # asked twice, offered once
        scheduler.schedule(participant)

    async def other_work() -> None:
        for _ in range(3):
            history.append("packets")
            await asyncio.sleep(0)

    await asyncio.gather(other_work(), _drained(scheduler))
    assert [h for h in history if h.startswith("offer")] == ["offer a", "offer b", "offer c"]
    # Never two offers in a row: the loop (and so the sockets) is served between them.
    assert all(not (x.startswith("offer") and y.startswith("offer")) for x, y in itertools.pairwise(history))
    assert scheduler.offers_made == 3  # a failing offer does not stop the others
    await scheduler.close()


async def _drained(scheduler: NegotiationScheduler, offers: int = 3) -> None:
    while scheduler.offers_made < offers:
        await asyncio.sleep(0)


async def test_answers_arriving_together_are_applied_one_loop_iteration_apart() -> None:
    # Seven answers after an ejection arrive in one read of the sockets; applied back to back they
    # stalled every forwarded packet for their sum (43 ms measured). "packets" stands for what the
    # loop reads between two iterations: it must come between any two negotiation steps.
    history: list[str] = []
    scheduler = NegotiationScheduler()
    loop = asyncio.get_running_loop()

    async def apply_answer(name: str) -> None:
        async with scheduler.turn():
            history.append(f"answer {name}")  # setRemoteDescription: synchronous, it never yields
            loop.call_soon(history.append, "packets")

    await asyncio.gather(*(apply_answer(name) for name in "abc"))
    assert history == ["answer a", "packets", "answer b", "packets", "answer c", "packets"]


async def test_an_offer_and_an_answer_take_turns_too() -> None:
    history: list[str] = []
    scheduler = NegotiationScheduler()
    loop = asyncio.get_running_loop()

    class Offering(_Recorder):
        async def make_offer(self) -> None:
            await super().make_offer()
            loop.call_soon(history.append, "packets")

    scheduler.schedule(Offering("a", history))

    async def apply_answer() -> None:
        async with scheduler.turn():
            history.append("answer b")
            loop.call_soon(history.append, "packets")

    await asyncio.gather(apply_answer(), _drained(scheduler, offers=1))
    assert sorted(h for h in history if h != "packets") == ["answer b", "offer a"]
    assert all(x == "packets" or y == "packets" for x, y in itertools.pairwise(history)), history
    await scheduler.close()


async def test_deferred_offers_come_after_urgent_ones_one_at_a_time_spaced_apart() -> None:
    # After an ejection the remaining participants' offers only retire m-lines (the ejected media
    # stopped at once): made together, their offers and the clients' answers all want the CPU at
    # the same moment. Deferred, they are spread; a subscription (urgent) does not wait behind them.
    history: list[str] = []
    times: list[float] = []
    loop = asyncio.get_running_loop()
    scheduler = NegotiationScheduler(deferred_spacing=0.05)

    class Timed(_Recorder):
        async def make_offer(self) -> None:
            times.append(loop.time())
            await super().make_offer()

    left = [Timed(name, history) for name in "abc"]
    joining = Timed("j", history)
    started = loop.time()
    for participant in left:
        scheduler.schedule(participant, deferred=True)
    scheduler.schedule(left[0], deferred=True)  # asked twice, offered once
    scheduler.schedule(joining)
    await _drained(scheduler, offers=4)
    assert history == ["offer j", "offer a", "offer b", "offer c"]
    assert times[0] - started < 0.05  # the urgent one waited for no deferred one
    deferred_times = [started, *times[1:]]
    # (asyncio may fire a timer up to its clock's resolution early: 1 ms of slack)
    assert all(b - a >= 0.049 for a, b in itertools.pairwise(deferred_times)), deferred_times

    # An urgent request promotes a deferred offer: made at once, and only once.
    history.clear()
    scheduler.schedule(left[0], deferred=True)
    scheduler.schedule(left[1], deferred=True)
    scheduler.schedule(left[1])
    await _drained(scheduler, offers=6)
    assert history == ["offer b", "offer a"]
    await scheduler.close()
