"""How long the cyclic garbage collector stops the event loop: every collection timed by gc.callbacks.

Everything in the SFU runs on one event loop, so a collection that walks many objects is a gap in
every forwarded stream (gen-2 collections of 53-118 ms were measured in issue 12). Benchmarks and
servers install a :class:`GcPauses` to report the longest pause, per generation.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class GcPauses:
    """The collector's pauses since :meth:`install` (or the last :meth:`reset`)."""

    max_ms: float = 0.0
    """The longest collection, any generation."""
    count: int = 0
    total_ms: float = 0.0
    max_ms_by_generation: dict[int, float] = field(default_factory=dict)
    _started: float | None = None

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
            return
        if self._started is None:
            return
        pause = (time.perf_counter() - self._started) * 1000
        self._started = None
        self.count += 1
        self.total_ms += pause
        self.max_ms = max(self.max_ms, pause)
        generation = int(info.get("generation", -1))
        self.max_ms_by_generation[generation] = max(self.max_ms_by_generation.get(generation, 0.0), pause)
