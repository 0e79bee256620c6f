"""A clock for measuring media gaps on a shared machine: time the thread spent waiting for a CPU is removed.

On a loaded machine the kernel can leave a runnable test process without a CPU for a few hundred
milliseconds; a frame gap measured in wall-clock time then reports the neighbours' load, not the SFU.
Linux accounts that waiting per thread (``/proc/thread-self/schedstat``, second field: nanoseconds
spent runnable on a run queue). Everything else still counts: time spent computing, and time spent
idle waiting for packets that the SFU did not deliver.
"""

from __future__ import annotations

import os
import time

_SCHEDSTAT = "/proc/thread-self/schedstat"


class ScheduledClock:
    """``time.monotonic()`` minus the run-queue delay of the thread that created the clock.

    Call it only from that thread (the event loop's). Without schedstat it is ``time.monotonic``.
    """

    def __init__(self) -> None:
        try:
            self._fd: int | None = os.open(_SCHEDSTAT, os.O_RDONLY)
        except OSError:
            self._fd = None

    def run_queue_delay(self) -> float:
        """Seconds the thread has spent runnable but not running, since it started."""
        if self._fd is None:
            return 0.0
        return int(os.pread(self._fd, 128, 0).split()[1]) / 1e9

    def __call__(self) -> float:
        return time.monotonic() - self.run_queue_delay()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
