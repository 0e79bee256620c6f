"""Real database files for the core's tests: built by the test-DB builder, or MaxMind's own."""

from __future__ import annotations

from pathlib import Path

import netaddr
import pytest
from mmdb_writer import MMDBWriter

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


def build_asn_database(path: Path, database_type: str = "GeoLite2-ASN") -> Path:
    """A sound .mmdb shaped like MaxMind's ASN database: numbers of networks, no country at all.

    114.114.0.0/16 (a probe address of the Locator) and the loopback ranges are in it.
    """
    writer = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type=database_type)
    for network, asn in (("114.114.0.0/16", 21859), ("127.86.0.0/16", 4134), ("127.49.0.0/16", 3320)):
        record = {"autonomous_system_number": asn, "autonomous_system_organization": f"AS{asn}"}
        writer.insert_network(netaddr.IPSet([network]), record)
    writer.to_db_file(str(path))
    return path


@pytest.fixture
def asn_db(tmp_path: Path) -> Path:
    """GeoLite2-ASN-shaped: a valid file that places nobody in a country."""
    return build_asn_database(tmp_path / "GeoLite2-ASN.mmdb")


@pytest.fixture
def country_typed_asn_db(tmp_path: Path) -> Path:
    """ASN records in a file whose metadata claims GeoLite2-Country."""
    return build_asn_database(tmp_path / "liar.mmdb", database_type="GeoLite2-Country")


@pytest.fixture
def corrupt_at_lookup(tmp_path: Path) -> Path:
    """A country database (127.86/16 CN, 127.49/16 DE) whose CN record is corrupt: sound when
    opened (the probes miss it), corrupt for 127.86/16 only."""
    path = tmp_path / "corrupt-cn.mmdb"
    build_database(path, ["127.86.0.0/16=CN", "127.49.0.0/16=DE"])
    data = path.read_bytes()
    value = data.index(b"\x42CN")  # the UTF-8 string "CN": control byte 0x42, then its two bytes
    # ... becomes a pointer (type 1, 2 more bytes) far past the end of the data section.
    path.write_bytes(data[:value] + b"\x2f\xff\xff" + data[value + 3 :])
    return path
