"""Session-wide rules every test runs under."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

from sfu_geofence.netguard import LoopbackGuard, loopback_only
from sfu_geofence.rtc.fanout import c_fanout_enabled
from sfu_geofence.testing.ci import skip_or_fail
from sfu_geofence.testing.coturn import COTURN_MISSING, TurnServer, find_turnserver, running_coturn
from sfu_geofence.testing.eventloops import GUARD_KEY
from sfu_geofence.testing.janus import JANUS_MISSING, JanusServer, find_janus, running_janus
from sfu_geofence.testing.netns import in_lan_namespace, is_own_lan_address

# pytest_browser: tests marked `browser` run in a network namespace with only lo, and their fixtures
# (docs/testing.md); pytester: for testing that plugin.
pytest_plugins = ["sfu_geofence.testing.pytest_browser", "pytester"]


@pytest.fixture(scope="session", autouse=True)
def loopback_guard(request: pytest.FixtureRequest) -> Iterator[LoopbackGuard]:
    """Refuse (and afterwards fail on) any traffic to a non-loopback address, in every test.

    In a LAN namespace of the tests' own (tests marked ``lan``), its own dummy addresses are allowed too.
    The guard also checks the uvloop loops of the directories that run on it
    (sfu_geofence.testing.eventloops).
    """
    with loopback_only(is_own_lan_address if in_lan_namespace() else None) as guard:
        request.config.stash[GUARD_KEY] = guard
        yield guard
        del request.config.stash[GUARD_KEY]
    assert not guard.violations, f"traffic to non-loopback destinations: {guard.violations}"


@pytest.fixture
def frozen_heap() -> Iterator[None]:
    """The test's SFU process starts like serve's: what exists before it is frozen out of the collector.

    ``sfu-geofence serve`` calls ``gc.freeze()`` once started. A test process instead holds everything
    earlier tests left, and a full collection walking it stalls the one event loop that runs the SFU
    and the test's peers (53-118 ms measured in a whole-suite run), longer than the 60 ms that "three
    20 ms audio packets" allows. Media tests that bound frame gaps use this fixture.
    """
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@pytest.fixture
def turn_server(tmp_path: Path) -> Iterator[TurnServer]:
    """A real coturn on 127.0.0.1 (relaying from 127.0.0.3), stopped by PID afterwards."""
    if find_turnserver() is None:
        skip_or_fail(COTURN_MISSING, kind="relay")
    directory = tmp_path / "coturn"
    directory.mkdir()
    with running_coturn(directory) as server:
        yield server


@pytest.fixture
def janus(tmp_path: Path) -> Iterator[JanusServer]:
    """A Janus of this test's own (config files in tmp_path, ICE on the LAN dummy only), stopped by PID."""
    if find_janus() is None:
        skip_or_fail(JANUS_MISSING, kind="janus")
    directory = tmp_path / "janus"
    directory.mkdir()
    with running_janus(directory) as server:
        yield server


@pytest.fixture
def c_fanout() -> None:
    """The C fan-out is built (``pip install -e .`` builds it; CI must test it, so there it fails)."""
    if not c_fanout_enabled():
        skip_or_fail(
            "the C fan-out (sfu_geofence.rtc._fanout) is not built: pip install -e .", kind="C fan-out"
        )
