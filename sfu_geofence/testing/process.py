"""Running a module of this package in a child Python process (abrupt-death tests, ``serve`` tests)."""

from __future__ import annotations

import asyncio
import os
import sys


async def spawn_module(module: str, *args: str) -> asyncio.subprocess.Process:
    """Start ``python -m module args...`` with this checkout importable and its stdout piped."""
    path = os.pathsep.join(p for p in (os.getcwd(), os.environ.get("PYTHONPATH", "")) if p)
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        *args,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": path},
    )


async def stop(process: asyncio.subprocess.Process) -> None:
    """Kill the process if it still runs, and reap it."""
    if process.returncode is None:
        process.kill()
    await process.wait()
