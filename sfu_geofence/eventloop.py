"""The event loop the server, the demo, the load tester and the benchmarks run on: uvloop unless turned off.

uvloop (libuv, in C) cut 20-25 % of the SFU's CPU per forwarded packet in the issue-12 measurement,
with nothing else changed: the media path is socket reads, ``sendto`` and callbacks, which is
exactly what it speeds up. ``--no-uvloop`` or ``SFU_GEOFENCE_UVLOOP=0`` runs on the standard
library's loop instead (to compare, or to debug with tools that only know that one).
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, TypeVar

import uvloop

ENV_UVLOOP = "SFU_GEOFENCE_UVLOOP"
_OFF = frozenset({"0", "false", "no", "off"})

T = TypeVar("T")

LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def uvloop_enabled(environ: Mapping[str, str] | None = None) -> bool:
    """True unless ``SFU_GEOFENCE_UVLOOP`` says 0/false/no/off."""
    value = (os.environ if environ is None else environ).get(ENV_UVLOOP, "1")
    return value.strip().lower() not in _OFF


def add_uvloop_argument(parser: argparse.ArgumentParser) -> None:
    """``--no-uvloop`` (sets ``args.uvloop``; default from ``SFU_GEOFENCE_UVLOOP``)."""
    parser.add_argument(
        "--no-uvloop",
        dest="uvloop",
        action="store_false",
        default=uvloop_enabled(),
        help=f"run on the standard library's event loop instead of uvloop (${ENV_UVLOOP}=0)",
    )


def loop_factory(use_uvloop: bool) -> LoopFactory:
    """A new-loop factory: uvloop's or the standard library's."""
    return uvloop.new_event_loop if use_uvloop else asyncio.new_event_loop


def run(main: Coroutine[Any, Any, T], *, use_uvloop: bool = True, factory: LoopFactory | None = None) -> T:
    """``asyncio.run(main)`` on uvloop or asyncio's loop, or on the loop ``factory`` makes (e.g. the
    loopback guard's ``loop_factory``)."""
    with asyncio.Runner(loop_factory=factory or loop_factory(use_uvloop)) as runner:
        return runner.run(main)


def add_blocking_reader(fd: int, callback: Callable[..., object], *args: Any) -> None:
    """``loop.add_reader`` for a descriptor read with blocking calls (a multiprocessing pipe).

    uvloop makes a watched descriptor non-blocking, and ``Connection.recv``/``send`` of a message
    larger than the pipe's buffer then fail half-way (EAGAIN): the descriptor is made blocking again.
    """
    asyncio.get_running_loop().add_reader(fd, callback, *args)
    os.set_blocking(fd, True)


def running_loop_name() -> str:
    """``"uvloop"`` or ``"asyncio"``: which loop runs the caller (for reports)."""
    return "uvloop" if isinstance(asyncio.get_running_loop(), uvloop.Loop) else "asyncio"
