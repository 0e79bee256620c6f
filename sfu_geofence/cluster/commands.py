"""Operator commands from one node to another through Redis (an ejection by hand, today).

The asking node PUBLISHes ``{"command", ..., "reply": key}`` on ``{prefix}:node:{id}:commands``
(the number of receivers says at once whether the node listens), then waits on BLPOP ``key`` for
the answer, which the node that acted LPUSHes (with an expiry, so an answer nobody waits for any
more does not stay). Redis's own primitives, no protocol of ours: a lost node is a 504, never a hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
"""Acts on one command here; returns the answer (a JSON object)."""

REPLY_TTL = 30
"""Seconds an answer waits for its asker."""

REPLY_GRACE = 0.5
"""Seconds past its BLPOP's own timeout an asker waits for Redis itself to answer."""


class NodeUnavailable(Exception):
    """The node did not take the command, or did not answer in time."""


class NodeCommands:
    """Send commands to other nodes, and act on those sent to this one."""

    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self._client = client
        self._prefix = prefix
        self._tasks: set[asyncio.Task[None]] = set()

    def channel(self, node: str) -> str:
        return f"{self._prefix}:node:{node}:commands"

    async def send(self, node: str, command: dict[str, Any], within: float) -> dict[str, Any]:
        """``command`` to ``node``; its answer, or NodeUnavailable within ``within`` seconds."""
        reply = f"{self._prefix}:reply:{secrets.token_hex(12)}"
        try:
            # Redis's own BLPOP timeout ends the wait; ours (a little later) bounds a stalled Redis.
            async with asyncio.timeout(within + REPLY_GRACE):
                message = json.dumps({**command, "reply": reply})
                if not await self._client.publish(self.channel(node), message):
                    raise NodeUnavailable(
                        f"node {node} does not listen for commands (it stopped or lost Redis)"
                    )
                answer = await self._client.blpop([reply], timeout=within)
        except TimeoutError:  # before OSError, of which it is one
            raise NodeUnavailable(f"Redis did not answer within {within + REPLY_GRACE:g} s") from None
        except (RedisError, OSError) as exc:
            raise NodeUnavailable(f"cannot reach node {node} through Redis: {exc}") from None
        if answer is None:
            raise NodeUnavailable(f"node {node} did not answer within {within:g} s")
        result: dict[str, Any] = json.loads(answer[1])
        return result

    async def serve(self, node: str, handler: Handler, poll: float = 1.0) -> None:
        """Act on the commands sent to ``node`` for ever (resubscribing after a lost connection).

        Read with a ``poll`` timeout rather than blocking: a read blocked longer than the client's
        socket timeout would drop the subscription, and a command published meanwhile would be lost.
        """
        while True:
            pubsub = self._client.pubsub()
            try:
                await pubsub.subscribe(self.channel(node))
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=poll)
                    if message is not None and message["type"] == "message":
                        task = asyncio.ensure_future(self._act(message["data"], handler))
                        self._tasks.add(task)
                        task.add_done_callback(self._tasks.discard)
            except (RedisError, OSError) as exc:
                logger.warning("node commands: subscription lost (%s); retrying", exc)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            await asyncio.sleep(0.2)

    async def aclose(self, within: float = 1.0) -> None:
        """A node that stops: the answers on their way go out for ``within`` seconds, then what is
        still running is cancelled (never left pending past the node's end)."""
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=within)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def _act(self, data: bytes, handler: Handler) -> None:
        try:
            command = json.loads(data)
            answer = await handler(command)
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.lpush(command["reply"], json.dumps(answer))
                pipe.expire(command["reply"], REPLY_TTL)
                await pipe.execute()
        except Exception:
            logger.exception("node commands: a command could not be answered")
