"""Waiting in integration tests for a condition that says why it is not met yet."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..synthetic.client import SyntheticPeer


async def eventually(check: Callable[[], str | None], *, within: float, interval: float = 0.02) -> None:
    """Poll ``check`` until it returns None; after ``within`` seconds fail with its last reason.

    ``check`` returns None when the condition holds, otherwise a sentence saying what is missing,
    which becomes the failure message.
    """
    deadline = time.monotonic() + within
    while True:
        reason = check()
        if reason is None:
            return
        if time.monotonic() >= deadline:
            raise AssertionError(f"not within {within:g} s: {reason}")
        await asyncio.sleep(interval)


def receiving_media(peers: Iterable[SyntheticPeer], frames: int = 5) -> str | None:
    """For :func:`eventually`: None once every peer receives audio and video, ``frames`` frames of each."""
    for peer in peers:
        counts = [c.frames for c in peer.meter.counts() if c.source]
        if len(counts) < 2 or min(counts) < frames:
            return f"{peer.name} received frames {counts} (expected audio and video, {frames}+ frames each)"
    return None
