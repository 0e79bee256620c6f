"""Session-wide rules every test runs under."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sfu_geofence.testing.netguard import LoopbackGuard, loopback_only

# pytest_browser: tests marked `browser` run in a network namespace with only lo, and their fixtures
# (docs/testing.md); pytester: for testing that plugin.
pytest_plugins = ["sfu_geofence.testing.pytest_browser", "pytester"]


@pytest.fixture(scope="session", autouse=True)
def loopback_guard() -> Iterator[LoopbackGuard]:
    """Refuse (and afterwards fail on) any traffic to a non-loopback address, in every test."""
    with loopback_only() as guard:
        yield guard
    assert not guard.violations, f"traffic to non-loopback destinations: {guard.violations}"
