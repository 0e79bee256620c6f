"""Running a module of this package in a child Python process (abrupt-death tests, ``serve`` tests)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable, Mapping
from typing import IO


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


async def spawn_serve(
    *args: str,
    env: Mapping[str, str] | None = None,
    stderr: int | IO[bytes] | None = None,
    preexec_fn: Callable[[], None] | None = None,
) -> asyncio.subprocess.Process:
    """``python -m sfu_geofence serve --loopback-only --port 0 args...`` (stdout piped; it prints its
    signaling URL, then its admin listener's), configured by its flags and ``env`` only: the
    ``SFU_GEOFENCE_*`` variables of this process are left out."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("SFU_GEOFENCE_")}
    path = os.pathsep.join(p for p in (os.getcwd(), os.environ.get("PYTHONPATH", "")) if p)
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sfu_geofence",
        "serve",
        "--loopback-only",
        "--port",
        "0",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=stderr,
        env={**inherited, "PYTHONPATH": path, **(env or {})},
        preexec_fn=preexec_fn,
    )


async def stop(process: asyncio.subprocess.Process) -> None:
    """Kill the process if it still runs, and reap it."""
    if process.returncode is None:
        process.kill()
    await process.wait()


def terminate(process: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM a server this test started (by its PID), SIGKILL it after ``grace`` seconds, and reap it."""
    process.terminate()
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
