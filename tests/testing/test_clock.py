"""The scheduled clock: wall-clock time minus what the thread spent waiting for a CPU."""

from __future__ import annotations

import time

from sfu_geofence.testing.clock import ScheduledClock


def test_the_clock_advances_with_work_and_never_runs_ahead_of_monotonic_time() -> None:
    clock = ScheduledClock()
    try:
        delay_before, start = clock.run_queue_delay(), clock()
        busy_until = time.monotonic() + 0.05
        while time.monotonic() < busy_until:
            pass
        delay_after, end = clock.run_queue_delay(), clock()
        assert delay_after >= delay_before >= 0
        # Whatever was subtracted is exactly the run-queue delay accrued meanwhile.
        assert end - start <= 0.05 + (time.monotonic() - busy_until) + 1e-3
        assert end - start >= 0.05 - (delay_after - delay_before) - 1e-3
        assert clock() <= time.monotonic()
    finally:
        clock.close()
