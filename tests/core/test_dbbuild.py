"""The test-database builder writes real .mmdb files that maxminddb and geoip2 read."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import geoip2.database
import maxminddb
import pytest

from sfu_geofence.core.dbbuild import Assignment, build_database


def test_larger_networks_may_be_given_after_the_smaller_ones_inside_them(tmp_path: Path) -> None:
    path = build_database(tmp_path / "t.mmdb", ["127.86.0.0/16=CN", "127.0.0.0/8=US", "127.49.0.0/16=DE"])
    with maxminddb.open_database(str(path)) as reader:
        assert [reader.get(a) for a in ("127.86.1.1", "127.49.2.2", "127.1.1.1", "::1")] == [
            {"country_code": "CN"},
            {"country_code": "DE"},
            {"country_code": "US"},
            None,
        ]


def test_the_geoip2_country_shape_is_read_by_geoip2_with_names_and_registered_country(tmp_path: Path) -> None:
    path = build_database(
        tmp_path / "g.mmdb",
        ["127.86.0.0/16=CN", "127.50.0.0/16=registered:FR"],
        shape="geoip2-country",
        built=datetime(2026, 11, 1, tzinfo=UTC),
    )
    with geoip2.database.Reader(str(path)) as reader:
        cn = reader.country("127.86.0.1")
        assert (cn.country.iso_code, cn.country.name, cn.registered_country.iso_code) == ("CN", "China", "CN")
        fr = reader.country("127.50.0.1")
        assert (fr.country.iso_code, fr.registered_country.iso_code) == (None, "FR")
        assert reader.metadata().build_epoch == int(datetime(2026, 11, 1, tzinfo=UTC).timestamp())


def test_ipv6_loopback_cannot_be_mapped_together_with_the_ipv4_it_aliases(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="same place"):
        build_database(tmp_path / "x.mmdb", ["::1/128=US", "0.0.0.0/8=CN"])
    build_database(tmp_path / "ok.mmdb", ["::1/128=US", "127.0.0.0/8=CN"])


def test_mapping_lines_are_validated() -> None:
    assert Assignment.parse("127.86.0.0/16=cn").country == "CN"
    for bad, why in (
        ("127.86.0.0/16", "expected NETWORK=CC"),
        ("127.86.0.0/33=CN", "not an IP network"),
        ("127.86.0.0/16=China", "alpha-2"),
    ):
        with pytest.raises(ValueError, match=why):
            Assignment.parse(bad)
