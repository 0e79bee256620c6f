"""Real database files for the core's tests: built by the test-DB builder, or MaxMind's own."""

from __future__ import annotations

from pathlib import Path

import pytest

from sfu_geofence.testing.testdb import build_database

MAXMIND = Path(__file__).parent.parent / "data" / "maxmind"

#: Loopback ranges the core tests put in countries.
LOOPBACK = ["127.86.0.0/16=CN", "127.85.0.0/16=HK", "127.49.0.0/16=DE", "127.1.0.0/16=US", "fd00:86::/32=CN"]


@pytest.fixture
def loopback_db(tmp_path: Path) -> Path:
    """DB-IP-shaped: 127.86/16 CN, 127.85/16 HK, 127.49/16 DE, 127.1/16 US, fd00:86::/32 CN."""
    return build_database(tmp_path / "loopback.mmdb", LOOPBACK)


@pytest.fixture
def maxmind() -> Path:
    """MaxMind's test databases (see tests/data/maxmind/README.md)."""
    return MAXMIND
