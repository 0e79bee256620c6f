"""One step of a node's periodic work (heartbeats, lease renewals) that never stops the next one."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from redis.exceptions import RedisError


async def step(work: Callable[[], Awaitable[None]], logger: logging.Logger, what: str) -> None:
    """Run ``work``; Redis being unreachable is a warning, anything else (a bug) an error with its
    traceback: either way the loop goes on, or the node would silently vanish or lose its rooms."""
    try:
        await work()
    except (RedisError, OSError) as exc:
        logger.warning("%s: not now (%s); trying again", what, exc)
    except Exception:
        logger.exception("%s failed", what)
