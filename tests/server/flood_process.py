"""An attacker in a process of its own: many ``join`` attempts from one address, never answering.

Usage: ``flood_process.py WS_URL ADDRESS ROOM_PREFIX ATTEMPTS IN_FLIGHT HOLD_S``. Attempt *i* opens a
WebSocket from ADDRESS, sends ``join`` to room ROOM_PREFIX *i* (so no room's size limit stops the
flood) and then waits, never answering an offer, until the server
closes it or HOLD_S seconds pass. Prints one JSON line: how the attempts ended (an HTTP status of a
refused upgrade, or the WebSocket close code) and how long the flood took.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
from collections import Counter

import aiohttp


async def attempt(session: aiohttp.ClientSession, url: str, room: str, hold: float) -> str:
    try:
        async with session.ws_connect(url, max_msg_size=0) as ws:
            await ws.send_str(json.dumps({"type": "join", "room": room, "name": "flood"}))
            deadline = time.monotonic() + hold
            while (left := deadline - time.monotonic()) > 0:
                message = await ws.receive(timeout=left)
                if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                    return f"close {ws.close_code}"
            return "held"
    except aiohttp.WSServerHandshakeError as exc:
        return f"http {exc.status}"
    except TimeoutError:
        return "held"
    except aiohttp.ClientError as exc:
        return f"error {type(exc).__name__}"


async def main(url: str, address: str, room: str, attempts: int, in_flight: int, hold: float) -> None:
    slots = asyncio.Semaphore(in_flight)
    started = time.monotonic()
    connector = aiohttp.TCPConnector(local_addr=(address, 0), limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(n: int) -> str:
            async with slots:
                return await attempt(session, url, f"{room}{n}", hold)

        outcomes = await asyncio.gather(*(one(n) for n in range(attempts)))
    print(json.dumps({"outcomes": Counter(outcomes), "seconds": time.monotonic() - started}), flush=True)


if __name__ == "__main__":
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    url, address, room, attempts, in_flight, hold = sys.argv[1:]
    asyncio.run(main(url, address, room, int(attempts), int(in_flight), float(hold)))
