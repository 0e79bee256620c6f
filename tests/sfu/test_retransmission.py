"""What one NACK may buy: each number once, at most 64 of them, within budgets per consumer and subscriber."""

from __future__ import annotations

from sfu_geofence.sfu.retransmission import MAX_NACK_ENTRIES, RetransmissionBudget, requested


class FakeClock:
    """Seconds that advance only when told (a budget's refill is a function of time)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_duplicates_are_removed_in_order_and_the_rest_cut_at_64() -> None:
    assert requested([5, 3, 5, 5, 3, 9]) == [5, 3, 9]
    assert requested(list(range(1000)) * 3) == list(range(MAX_NACK_ENTRIES))


def test_the_budget_grants_its_burst_then_its_rate() -> None:
    clock = FakeClock()
    budget = RetransmissionBudget(rate=100, burst=50, clock=clock)
    assert budget.take(80) == 50
    assert budget.take(1) == 0
    clock.now = 0.1
    assert budget.take(80) == 10
    clock.now = 10.0
    assert budget.take(80) == 50  # never more than the burst at once, however long it waited


def test_what_was_granted_but_not_sent_is_given_back() -> None:
    budget = RetransmissionBudget(rate=100, burst=50, clock=FakeClock())
    assert budget.take(50) == 50
    budget.refund(20)
    assert budget.take(50) == 20


def test_consumers_sharing_a_subscriber_budget_never_get_more_than_it_together() -> None:
    clock = FakeClock()
    subscriber = RetransmissionBudget(rate=100, burst=60, clock=clock)
    audio, video = (RetransmissionBudget(rate=100, burst=50, clock=clock, shared=subscriber) for _ in "av")
    assert audio.take(50) == 50
    assert video.take(50) == 10  # its own bucket is full, the subscriber's is not
    video.refund(10)  # not sent: both buckets get it back
    assert subscriber.take(60) == 10
    assert video.take(50) == 0
