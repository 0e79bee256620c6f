"""What every adversarial test shares: a database that places loopback ranges in countries."""

from __future__ import annotations

from pathlib import Path

import pytest

from sfu_geofence.testing.testdb import build_database

COUNTRIES = {"US": "127.1.0.0/16", "DE": "127.49.0.0/16", "CN": "127.86.0.0/16"}


@pytest.fixture
def database(tmp_path: Path) -> Path:
    """127.1/16 in US, 127.49/16 in DE, 127.86/16 in CN."""
    return build_database(tmp_path / "countries.mmdb", [f"{net}={cc}" for cc, net in COUNTRIES.items()])
