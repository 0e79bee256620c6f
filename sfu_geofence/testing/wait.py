"""Waiting in integration tests for a condition that says why it is not met yet."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable


async def eventually(
    check: Callable[[], str | Awaitable[str | None] | None], *, within: float, interval: float = 0.02
) -> None:
    """Poll ``check`` until it returns None; after ``within`` seconds fail with its last reason.

    ``check`` returns None when the condition holds, otherwise a sentence saying what is missing,
    which becomes the failure message. It may be a coroutine function, for conditions that
    can only be read by asking a server (which applies some requests after answering them).
    """
    deadline = time.monotonic() + within
    while True:
        outcome = check()
        reason = await outcome if inspect.isawaitable(outcome) else outcome
        if reason is None:
            return
        if time.monotonic() >= deadline:
            raise AssertionError(f"not within {within:g} s: {reason}")
        await asyncio.sleep(interval)
