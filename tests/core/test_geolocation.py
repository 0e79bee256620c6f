"""Locating addresses in real .mmdb files: ours, MaxMind's test files, broken files, the embedded one."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sfu_geofence import DBIP_ATTRIBUTION, DatabaseError, InvalidAddress, Locator, normalise_address
from sfu_geofence.core.addresses import unmapped_network
from sfu_geofence.testing.testdb import build_database


def located(locator: Locator, address: str) -> tuple[str | None, str | None]:
    location = locator.locate(address)
    return location.country, location.source


def test_the_embedded_database_places_well_known_resolvers_and_names_its_build_and_attribution() -> None:
    locator = Locator()
    answers = {
        a: located(locator, a)[0]
        for a in ("114.114.114.114", "8.8.8.8", "168.95.1.1", "202.175.3.3", "205.252.144.228", "77.88.8.8")
    }
    assert answers == {
        "114.114.114.114": "CN",
        "8.8.8.8": "US",
        "168.95.1.1": "TW",
        "202.175.3.3": "MO",
        "205.252.144.228": "HK",
        "77.88.8.8": "RU",
    }
    info = locator.database
    assert (info.embedded, info.label, info.attribution) == (
        True,
        "DB-IP Country Lite 2026-06-01",
        DBIP_ATTRIBUTION,
    )
    assert located(locator, "8.8.8.8")[1] == "country_code"
    locator.close()
    locator.close()


def test_ipv4_mapped_ipv6_addresses_are_looked_up_as_the_ipv4_address_they_carry() -> None:
    locator = Locator()  # DB-IP does not map ::ffff:0:0/96 itself
    for address in ("::ffff:114.114.114.114", "::FFFF:114.114.114.114", "0:0:0:0:0:ffff:7272:7272"):
        assert located(locator, address) == ("CN", "country_code"), address
    assert normalise_address("::ffff:8.8.8.8") == "8.8.8.8"


@pytest.mark.parametrize(
    ("written", "meant"),
    [
        ("::ffff:10.0.0.0/104", "10.0.0.0/8"),
        ("::ffff:10.0.0.5/128", "10.0.0.5/32"),
        ("::ffff:0:0/96", "0.0.0.0/0"),
        ("10.0.0.0/8", "10.0.0.0/8"),
        ("::/0", "::/0"),  # wider than ::ffff:0:0/96: an IPv6 network, matching IPv6 addresses only
        ("fd00::/8", "fd00::/8"),
    ],
)
def test_networks_written_ipv4_mapped_are_the_ipv4_networks_addresses_are_compared_with(
    written: str, meant: str
) -> None:
    assert unmapped_network(ipaddress.ip_network(written)) == ipaddress.ip_network(meant)


def test_dotted_quads_with_zero_octets_are_read_as_written(loopback_db: Path) -> None:
    # A zero octet is no leading zero: "127.86.0.1" is that address, not an inet_aton form.
    locator = Locator(loopback_db)
    for address in ("127.86.0.1", "127.86.0.0", "127.86.10.0", "::ffff:127.86.0.1"):
        assert located(locator, address) == ("CN", "country_code"), address


def test_addresses_missing_from_the_database_are_unknown_not_errors(loopback_db: Path) -> None:
    locator = Locator(loopback_db)
    for address in ("127.0.0.1", "10.0.0.1", "::1", "8.8.8.8", "2001:db8::1"):
        assert located(locator, address) == (None, None), address
    assert located(locator, "127.86.3.4") == ("CN", "country_code")
    assert located(locator, "fd00:86::1") == ("CN", "country_code")


@pytest.mark.parametrize(
    "text",
    [
        *("", "bogus", "8.8.8", "010.1.1.1", "0x8.8.8.8", "8.8.8.8/24", "1.1.1.256", "8.8.8.8 ", "[::1]"),
        *("::g", "8.8.8.010", "8.8.8.8\x00", "1.2.3.4.5", "\uff11.2.3.4"),
    ],
)
def test_text_that_is_not_an_ip_address_is_rejected_with_a_specific_error(text: str) -> None:
    locator = Locator()
    with pytest.raises(InvalidAddress, match="not an IP address"):
        locator.locate(text)


@pytest.mark.parametrize("name", ["GeoIP2-Country-Test.mmdb", "GeoLite2-Country-Test.mmdb"])
def test_geoip2_country_uses_country_iso_code_and_says_so(maxmind: Path, name: str) -> None:
    locator = Locator(maxmind / name)
    assert {
        a: located(locator, a) for a in ("81.2.69.160", "89.160.20.128", "216.160.83.56", "2001:2e0::1")
    } == {
        "81.2.69.160": ("GB", "country"),
        "89.160.20.128": ("SE", "country"),
        "216.160.83.56": ("US", "country"),
        "2001:2e0::1": ("HK", "country"),
    }
    assert located(locator, "2a02:d180::5") == ("DE", "country")
    assert located(locator, "214.1.1.1") == (None, None)  # anycast: traits only
    if name.startswith("GeoIP2"):
        assert located(locator, "175.16.199.7") == ("CN", "country")
    assert locator.database.label == f"{name.split('-Test')[0]} 2026-02-04"


def test_geoip2_city_prefers_country_over_a_different_registered_country(maxmind: Path) -> None:
    locator = Locator(maxmind / "GeoIP2-City-Test.mmdb")
    assert located(locator, "81.2.69.160") == ("GB", "country")  # registered_country is US
    assert located(locator, "216.160.83.56") == ("US", "country")  # registered_country is GB


def test_registered_country_is_the_fallback_when_country_is_absent(tmp_path: Path) -> None:
    path = build_database(
        tmp_path / "g.mmdb", ["127.50.0.0/16=registered:FR", "127.86.0.0/16=CN"], shape="geoip2-country"
    )
    locator = Locator(path)
    assert located(locator, "127.50.1.1") == ("FR", "registered_country")
    assert located(locator, "127.86.1.1") == ("CN", "country")


def test_an_ipv6_address_is_unknown_in_an_ipv4_only_database(tmp_path: Path) -> None:
    locator = Locator(build_database(tmp_path / "v4.mmdb", ["127.86.0.0/16=CN"], ip_version=4))
    assert located(locator, "127.86.0.1") == ("CN", "country_code")
    assert located(locator, "2001:db8::1") == (None, None)
    with pytest.raises(InvalidAddress):
        locator.locate("bogus")


@pytest.mark.timeout(30)  # before the fix, opening the FIFO blocked for ever
def test_a_database_path_that_is_not_a_regular_file_is_a_clear_error(
    tmp_path: Path, loopback_db: Path
) -> None:
    fifo = tmp_path / "fifo.mmdb"
    os.mkfifo(fifo)
    for path in (fifo, tmp_path):
        with pytest.raises(DatabaseError, match="is not a regular file"):
            Locator(path)
    locator = Locator(loopback_db)
    with pytest.raises(DatabaseError, match="is not a regular file"):
        locator.reload(fifo)
    assert locator.database.path == str(loopback_db)


def test_a_missing_database_file_is_a_clear_error_at_start(tmp_path: Path) -> None:
    with pytest.raises(DatabaseError, match="does not exist"):
        Locator(tmp_path / "nope.mmdb")


@pytest.mark.parametrize(
    "name",
    [
        "bad-data/invalid-data-record-offset.mmdb",
        "bad-data/GeoIP2-City-Test-Invalid-Node-Count.mmdb",
        "bad-data/libmaxminddb-separator-record-max-left.mmdb",
        "bad-data/libmaxminddb-deep-nesting.mmdb",
        "LICENSE-MIT",
    ],
)
def test_a_corrupt_database_file_is_a_clear_error_at_start(maxmind: Path, name: str) -> None:
    with pytest.raises(DatabaseError, match=r"cannot be read|is corrupt"):
        Locator(maxmind / name)


def test_corrupt_data_met_at_lookup_raises_a_database_error(corrupt_at_lookup: Path) -> None:
    locator = Locator(corrupt_at_lookup)
    assert located(locator, "127.49.0.1") == ("DE", "country_code")
    for address in ("127.86.0.1", "127.86.255.255"):
        with pytest.raises(DatabaseError, match="corrupt data"):
            locator.locate(address)


def test_a_sound_file_that_is_not_a_country_database_is_refused_naming_its_type(asn_db: Path) -> None:
    with pytest.raises(DatabaseError, match="'GeoLite2-ASN' database, not a country one"):
        Locator(asn_db)


def test_a_file_claiming_to_be_a_country_database_without_countries_in_its_records_is_refused(
    country_typed_asn_db: Path,
) -> None:
    liar = country_typed_asn_db
    with pytest.raises(
        DatabaseError, match="records without any of country, country_code, registered_country"
    ):
        Locator(liar)


def test_a_database_of_another_kind_is_refused_on_reload_and_the_old_one_keeps_answering(
    loopback_db: Path, asn_db: Path
) -> None:
    locator = Locator(loopback_db)
    with pytest.raises(DatabaseError, match="GeoLite2-ASN"):
        locator.reload(asn_db)
    assert locator.database.path == str(loopback_db)
    assert located(locator, "127.86.0.1") == ("CN", "country_code")


@pytest.mark.parametrize(
    "name", ["GeoIP2-City-Test.mmdb", "GeoIP2-Country-Test.mmdb", "GeoLite2-Country-Test.mmdb"]
)
def test_country_and_city_databases_of_every_supported_kind_are_accepted(maxmind: Path, name: str) -> None:
    assert Locator(maxmind / name).database.database_type == name.removesuffix("-Test.mmdb")
    assert Locator().database.database_type == "country ipvAll"  # the embedded DB-IP file


def test_reload_swaps_to_a_new_database_and_a_corrupt_one_keeps_the_old(
    tmp_path: Path, maxmind: Path
) -> None:
    first = build_database(tmp_path / "first.mmdb", ["127.49.0.0/16=DE"])
    second = build_database(
        tmp_path / "second.mmdb", ["127.49.0.0/16=CN"], built=datetime(2026, 11, 1, tzinfo=UTC)
    )
    locator = Locator(first)
    assert located(locator, "127.49.0.1") == ("DE", "country_code")
    assert locator.reload(second).built == datetime(2026, 11, 1, tzinfo=UTC)
    assert located(locator, "127.49.0.1") == ("CN", "country_code")
    for broken in (tmp_path / "missing.mmdb", maxmind / "bad-data" / "invalid-data-record-offset.mmdb"):
        with pytest.raises(DatabaseError):
            locator.reload(broken)
        assert located(locator, "127.49.0.1") == ("CN", "country_code")
        assert locator.database.path == str(second)


def test_reload_without_a_path_rereads_the_file_replaced_in_place(tmp_path: Path) -> None:
    live = build_database(tmp_path / "live.mmdb", ["127.49.0.0/16=DE"])
    locator = Locator(live)
    replacement = build_database(tmp_path / "new.mmdb", ["127.49.0.0/16=US"])
    os.replace(replacement, live)  # as geoipupdate does
    locator.reload()
    assert located(locator, "127.49.0.1") == ("US", "country_code")


def test_a_database_older_than_30_days_is_reported_stale(tmp_path: Path) -> None:
    now = datetime(2026, 11, 25, tzinfo=UTC)
    fresh = Locator(build_database(tmp_path / "f.mmdb", ["127.1.0.0/16=US"], built=now - timedelta(days=29)))
    old = Locator(build_database(tmp_path / "o.mmdb", ["127.1.0.0/16=US"], built=now - timedelta(days=31)))
    assert fresh.database.staleness_warning(now) is None
    warning = old.database.staleness_warning(now)
    assert warning is not None
    assert "31 days old" in warning
    assert Locator().database.stale(now)  # the embedded build of 2026-06-01


_REWRITTEN_IN_PLACE = """
import sys
from sfu_geofence import Locator
path, replacement = sys.argv[1], open(sys.argv[2], "rb").read()
locator = Locator(path)
with open(path, "r+b") as file:  # what cp or an editor does: same inode, truncated, rewritten
    file.truncate(0)
    file.flush()
    print(locator.locate("127.86.0.1").country, flush=True)
    file.write(replacement[: len(replacement) // 2])
    file.flush()
    print(locator.locate("127.86.0.1").country, flush=True)
"""


def test_a_database_file_truncated_and_rewritten_in_place_does_not_disturb_the_build_in_use(
    tmp_path: Path,
) -> None:
    """The reader answers from its own copy: a mapping of the file itself would read the torn file, or
    die of SIGBUS at the first lookup after the truncation."""
    build_database(tmp_path / "geo.mmdb", ["127.86.0.0/16=CN"])
    build_database(tmp_path / "next.mmdb", ["127.86.0.0/16=DE"])
    result = subprocess.run(
        [sys.executable, "-c", _REWRITTEN_IN_PLACE, str(tmp_path / "geo.mmdb"), str(tmp_path / "next.mmdb")],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
    )
    assert (result.returncode, result.stdout.split()) == (0, ["CN", "CN"]), result.stderr
