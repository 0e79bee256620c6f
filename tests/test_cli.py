"""The sfu-geofence command, run as a separate process the way a newcomer runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sfu_geofence.cli import main

ROOT = Path(__file__).parent.parent


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "sfu_geofence", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_lookup_on_the_embedded_database_prints_cn_us_tw_with_field_build_and_attribution() -> None:
    result = run("lookup", "114.114.114.114", "8.8.8.8", "168.95.1.1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "114.114.114.114  CN       (country_code, DB-IP Country Lite 2026-06-01)",
        "8.8.8.8          US       (country_code, DB-IP Country Lite 2026-06-01)",
        "168.95.1.1       TW       (country_code, DB-IP Country Lite 2026-06-01)",
        "IP Geolocation by DB-IP (https://db-ip.com)",
    ]
    assert "days old" in result.stderr  # the embedded build is from 2026-06-01


def test_mkdb_then_lookup_with_db_places_loopback_addresses(tmp_path: Path) -> None:
    db = tmp_path / "test.mmdb"
    made = run(
        "mkdb",
        "--map",
        "127.86.0.0/16=CN",
        "--map",
        "127.49.0.0/16=DE",
        "-o",
        str(db),
        "--shape",
        "geoip2-country",
    )
    assert made.returncode == 0, made.stderr
    result = run("lookup", "--db", str(db), "127.86.0.1", "127.49.0.1", "127.0.0.1")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[:2] for line in lines] == [
        ["127.86.0.1", "CN"],
        ["127.49.0.1", "DE"],
        ["127.0.0.1", "unknown"],
    ]
    assert "(country, GeoIP2-Country " in lines[0]
    assert "DB-IP" not in result.stdout


def test_lookup_reports_a_bad_address_and_a_missing_database_clearly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["lookup", "8.8.8.8", "bogus"]) == 1
    assert "'bogus' is not an IP address" in capsys.readouterr().err
    assert main(["lookup", "--db", str(tmp_path / "none.mmdb"), "8.8.8.8"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_help_lists_the_subcommands() -> None:
    result = run("--help")
    assert result.returncode == 0
    assert "lookup" in result.stdout
    assert "mkdb" in result.stdout
