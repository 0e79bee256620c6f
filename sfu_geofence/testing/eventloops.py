"""The test session's event loop: uvloop, as ``serve`` runs, with the loopback guard kept in force.

``pytest_asyncio_loop_factories`` (pytest-asyncio >= 1.3) in a ``conftest.py`` returns
:func:`loop_factories`: every async test below it runs on a guarded uvloop (``LoopbackGuard.uvloop``),
or on the standard library's loop when ``SFU_GEOFENCE_UVLOOP=0`` (to compare, or to bisect a failure).
The session's guard is kept in ``config.stash[GUARD_KEY]`` by the fixture that installs it, so that
what a uvloop loop refuses fails the session like a refused ``socket.sendto``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

import pytest

from ..eventloop import uvloop_enabled
from ..netguard import LoopbackGuard

GUARD_KEY = pytest.StashKey[LoopbackGuard]()


def loop_factories(config: pytest.Config) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    """One loop factory: a guarded uvloop (default), or asyncio's when ``SFU_GEOFENCE_UVLOOP=0``."""
    if not uvloop_enabled():
        return {"asyncio": asyncio.new_event_loop}

    def guarded_uvloop() -> asyncio.AbstractEventLoop:
        return config.stash[GUARD_KEY].uvloop()

    return {"uvloop": guarded_uvloop}
