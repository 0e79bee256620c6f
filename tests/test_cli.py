"""The sfu-geofence command, run as a separate process the way a newcomer runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sfu_geofence import AuditEvent, AuditLog, EventKind
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


def _state_dir_with_a_day_of_exclusions(directory: Path) -> Path:
    directory.mkdir()
    log = AuditLog(directory / "audit.sqlite")
    day = datetime(2026, 11, 25, 16, 0, tzinfo=UTC)
    refused = AuditEvent(EventKind.ADMISSION, "refused", room="town-hall", reason="country_denied", time=day)
    log.record(replace(refused, country="CN"))
    log.record(replace(refused, country="CN"))
    log.record(replace(refused, reason="unknown_refused"))
    ejected = AuditEvent(EventKind.EJECTION, "requested", room="town-hall", country="CN", time=day)
    log.record(replace(ejected, detail="policy_changed"))
    rule = "deny CN; unknown refuse; relayed use-signaling-country; enforce"
    change = AuditEvent(EventKind.POLICY, "changed", room="town-hall", rule=rule, time=day, policy_version=4)
    log.record(replace(change, actor="alice", reason="ticket 4711"))
    log.close()
    return directory


def test_report_prints_refusals_ejections_and_policy_changes_as_text(tmp_path: Path) -> None:
    state = _state_dir_with_a_day_of_exclusions(tmp_path / "state")
    result = run("report", "--state-dir", str(state), "--since", "2026-11-01")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "sfu-geofence transparency report: since 2026-11-01T00:00:00+00:00",
        "",
        "refusals: 3",
        "  by day: 2026-11-25 3",
        "  by room: town-hall 3",
        "  by country: CN 2, unknown 1",
        "  by trigger: country_denied 2, unknown_refused 1",
        "",
        "ejections: 1",
        "  by day: 2026-11-25 1",
        "  by room: town-hall 1",
        "  by country: CN 1",
        "  by trigger: policy_changed 1",
        "",
        "policy changes: 1",
        "  2026-11-25 16:00:00Z  room town-hall  -> deny CN; unknown refuse; relayed use-signaling-country; "
        "enforce by alice: ticket 4711",
    ]


def test_report_writes_csv_and_a_png_plot(tmp_path: Path) -> None:
    state = _state_dir_with_a_day_of_exclusions(tmp_path / "state")
    result = run("report", "--state-dir", str(state), "--since", "2026-11-25T12:00:00", "--csv")
    assert result.returncode == 0, result.stderr
    rule = "deny CN; unknown refuse; relayed use-signaling-country; enforce"
    assert result.stdout.splitlines() == [
        "record,day,time,room,country,trigger,count,rule,version,actor,reason",
        "refusal,2026-11-25,,town-hall,CN,country_denied,2,,,,",
        "refusal,2026-11-25,,town-hall,unknown,unknown_refused,1,,,,",
        "ejection,2026-11-25,,town-hall,CN,policy_changed,1,,,,",
        f"policy_change,2026-11-25,2026-11-25T16:00:00+00:00,town-hall,,,,{rule},4,alice,ticket 4711",
    ]
    plot = tmp_path / "out" / "report.png"
    result = run("report", "--state-dir", str(state), "--since", "2026-11-01", "--png", "--output", str(plot))
    assert result.returncode == 0, result.stderr
    assert plot.read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--since", "2026-11-01"], "no audit log at"),
        (["--since", "last tuesday"], "is not a date"),
        (["--since", "2026-11-01", "--png"], "--png writes a file"),
    ],
)
def test_report_refuses_what_it_cannot_do_with_the_reason(tmp_path: Path, args: list[str], says: str) -> None:
    result = run("report", "--state-dir", str(tmp_path), *args)
    assert result.returncode == 2
    assert says in result.stderr
