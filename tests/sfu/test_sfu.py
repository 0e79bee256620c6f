"""The SFU's own bookkeeping: what it keeps about joins, admitted or not."""

from __future__ import annotations

import tracemalloc

from sfu_geofence.sfu import Sfu


def test_issuing_participant_ids_keeps_nothing_so_refused_retries_cannot_grow_memory() -> None:
    """A join gets its id before admission decides; a refused one must leave no trace behind."""
    sfu = Sfu()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for _ in range(20_000):
            sfu.new_participant_id()  # and forgotten, as a refused join's is
        kept = tracemalloc.take_snapshot().compare_to(before, "filename")
    finally:
        tracemalloc.stop()
    grown = sum(stat.size_diff for stat in kept if stat.traceback[0].filename.endswith("sfu/sfu.py"))
    assert grown < 10_000, f"{grown} bytes kept by the SFU for 20 000 ids"
    ids = {sfu.new_participant_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(len(i) == 17 and i.startswith("p") for i in ids)  # 96 random bits, URL-safe
