"""What stops the event loop, measured: garbage-collector pauses and the loop's own stalls.

Everything in the SFU runs on one event loop, so anything that holds it (a collection that walks
many objects, a burst of synchronous aiortc work) is a gap in every forwarded stream: gen-2
collections of 53-118 ms and 40-130 ms stalls around ejections were measured in issue 12.
:class:`GcPauses` times every collection (``gc.callbacks``); :class:`LoopStalls` records when a short
timer fired late, and by how much. Benchmarks install them to say what the SFU itself did.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from dataclasses import dataclass, field
from typing import Any

MAX_EVENTS = 100_000
"Pauses or stalls kept one by one (bounded: a long run keeps its first ones)."


@dataclass
class GcPauses:
    """The collector's pauses since :meth:`install` (or the last :meth:`reset`)."""

    max_ms: float = 0.0
    """The longest collection, any generation."""
    count: int = 0
    total_ms: float = 0.0
    max_ms_by_generation: dict[int, float] = field(default_factory=dict)
    events: list[tuple[float, float]] | None = None
    """(monotonic start, ms) of every pause, when given a list to keep them in."""
    _started: float | None = None
    _started_at: float = 0.0

    def install(self) -> GcPauses:
        """Start timing collections (idempotent); returns self."""
        if self._callback not in gc.callbacks:
            gc.callbacks.append(self._callback)
        return self

    def uninstall(self) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)

    def reset(self) -> None:
        """Forget the pauses so far (a measurement window starts)."""
        self.max_ms = self.total_ms = 0.0
        self.count = 0
        self.max_ms_by_generation = {}

    def snapshot(self) -> dict[str, Any]:
        """The figures as plain values (for a JSON report or a pipe)."""
        return {
            "gc_pause_max_ms": round(self.max_ms, 3),
            "gc_pauses": self.count,
            "gc_pause_total_ms": round(self.total_ms, 3),
            "gc_pause_max_ms_by_generation": {
                str(g): round(v, 3) for g, v in self.max_ms_by_generation.items()
            },
        }

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            self._started_at = time.monotonic()
            return
        if self._started is None:
            return
        pause = (time.perf_counter() - self._started) * 1000
        self._started = None
        self.count += 1
        self.total_ms += pause
        self.max_ms = max(self.max_ms, pause)
        if self.events is not None and len(self.events) < MAX_EVENTS:
            self.events.append((self._started_at, pause))
        generation = int(info.get("generation", -1))
        self.max_ms_by_generation[generation] = max(self.max_ms_by_generation.get(generation, 0.0), pause)


class LoopStalls:
    """Stalls of the running event loop: a ``tick``-second timer that fired more than ``threshold``
    seconds late marks a stall of that length (at the cost of ``1/tick`` wake-ups a second)."""

    def __init__(self, tick: float = 0.002, threshold: float = 0.002) -> None:
        self.tick = tick
        self.threshold = threshold
        self.events: list[tuple[float, float]] = []
        """(monotonic start, ms) of every stall longer than the threshold."""
        self._task: asyncio.Task[None] | None = None

    def start(self) -> LoopStalls:
        self._task = asyncio.ensure_future(self._run())
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def max_ms(self, start: float, end: float) -> float:
        """The longest stall that began in [start, end)."""
        return max((ms for at, ms in self.events if start <= at < end), default=0.0)

    async def _run(self) -> None:
        tick, threshold = self.tick, self.threshold
        while True:
            before = time.monotonic()
            await asyncio.sleep(tick)
            late = time.monotonic() - before - tick
            if late > threshold and len(self.events) < MAX_EVENTS:
                self.events.append((before + tick, late * 1000))
