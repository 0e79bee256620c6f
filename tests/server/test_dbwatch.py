"""The ``--db`` file is watched: replaced (renamed over, or rewritten in place), it is reloaded with the
API reload's guarantees; a bad one keeps the build in use and raises the alarm."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from sfu_geofence import EventKind, Geofence
from sfu_geofence.protocol import EjectedMessage
from sfu_geofence.server.admin import TOKEN_ENV
from sfu_geofence.server.dbwatch import DatabaseWatch, FileVersion
from sfu_geofence.synthetic.client import SyntheticPeer, synthetic_tracks
from sfu_geofence.testing.host_contract import HostContract, write_contract_database
from sfu_geofence.testing.process import stop
from sfu_geofence.testing.wait import eventually

ROOT = Path(__file__).parents[2]
TOKEN = "dbwatch-token-0123456789"
DE = HostContract.address("DE")


def replace_atomically(target: Path, source: Path) -> None:
    """What geoipupdate does: write a new file beside it, then rename it over the old one."""
    temporary = target.with_suffix(".tmp")
    temporary.write_bytes(source.read_bytes())
    os.replace(temporary, target)


def rewrite_in_place(target: Path, source: Path) -> None:
    """What cp or an editor does: the same inode, truncated and written again."""
    with open(target, "r+b") as file:
        file.truncate(0)
        file.write(source.read_bytes())


@pytest.fixture
def fence(tmp_path: Path) -> Iterator[Geofence]:
    fence = Geofence(lambda request: None, database=write_contract_database(tmp_path / "geo.mmdb"))
    yield fence
    fence.close()


def country_of_de(fence: Geofence) -> str | None:
    return fence.decide("room", DE).country


@pytest.mark.parametrize("replace", [replace_atomically, rewrite_in_place])
def test_a_replaced_file_is_reloaded_once_it_has_stayed_the_same_for_one_interval(
    fence: Geofence, tmp_path: Path, replace: Any
) -> None:
    watch = DatabaseWatch(fence, interval=1)
    watch.poll()
    assert (watch.reloads, country_of_de(fence)) == (0, "DE")
    replace(tmp_path / "geo.mmdb", write_contract_database(tmp_path / "moved.mmdb", moved={"DE": "CN"}))
    watch.poll()  # changed: maybe still being written, so not yet
    assert (watch.reloads, country_of_de(fence)) == (0, "DE")
    watch.poll()
    assert (watch.reloads, country_of_de(fence)) == (1, "CN")
    watch.poll()
    assert watch.reloads == 1, "reloaded once per change"
    assert fence.database_alarm is None


def test_a_file_still_changing_is_not_read_until_it_stops(fence: Geofence, tmp_path: Path) -> None:
    watch = DatabaseWatch(fence, interval=1)
    moved = write_contract_database(tmp_path / "moved.mmdb", moved={"DE": "CN"}).read_bytes()
    path = tmp_path / "geo.mmdb"
    with open(path, "r+b") as file:
        file.truncate(0)
        for piece in range(4):  # a slow writer: a quarter of the file per interval
            file.write(moved[piece * len(moved) // 4 : (piece + 1) * len(moved) // 4])
            file.flush()
            os.utime(file.fileno(), ns=(piece, piece))  # a coarse clock would not tell the writes apart
            watch.poll()
            assert watch.reloads == 0
    watch.poll()
    assert (watch.reloads, country_of_de(fence), fence.database_alarm) == (1, "CN", None)


def test_a_corrupt_or_missing_file_keeps_the_build_in_use_and_raises_the_alarm_until_a_good_one_comes(
    fence: Geofence, tmp_path: Path
) -> None:
    path = tmp_path / "geo.mmdb"
    before = fence.database
    watch = DatabaseWatch(fence, interval=1)
    corrupt = tmp_path / "corrupt.mmdb"
    corrupt.write_bytes(path.read_bytes()[:300])
    replace_atomically(path, corrupt)
    watch.poll()
    watch.poll()
    assert (fence.database, country_of_de(fence)) == (before, "DE")
    alarm = fence.database_alarm
    assert alarm is not None
    assert "cannot be read" in alarm.message
    assert before.label in alarm.message
    watch.poll()
    assert watch.reloads == 1, "a bad file is tried once, not at every look"
    path.unlink()
    watch.poll()
    assert fence.database_alarm is not None
    assert "does not exist" in fence.database_alarm.message
    write_contract_database(path, moved={"DE": "CN"})
    watch.poll()
    watch.poll()
    assert (fence.database_alarm, country_of_de(fence)) == (None, "CN")
    outcomes = [e.outcome for e in fence.audit.events(kind=EventKind.DATABASE)]
    assert outcomes == ["loaded", "reload_failed", "reload_failed", "loaded"]


def test_after_an_operator_switches_files_the_watch_follows_the_new_one(
    fence: Geofence, tmp_path: Path
) -> None:
    watch = DatabaseWatch(fence, interval=1)
    other = write_contract_database(tmp_path / "other.mmdb")
    fence.reload_database(other)
    watch.poll()
    assert watch.reloads == 0, "the operator's reload is not repeated"
    replace_atomically(other, write_contract_database(tmp_path / "moved.mmdb", moved={"DE": "CN"}))
    watch.poll()
    watch.poll()
    assert (watch.reloads, country_of_de(fence)) == (1, "CN")
    assert FileVersion.of(str(tmp_path / "nothing-here")) is None


# -- a real serve process ----------------------------------------------------------------------------


async def _api(session: aiohttp.ClientSession, url: str, method: str, path: str, **body: Any) -> Any:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with session.request(method, f"{url}/api{path}", json=body or None, headers=headers) as response:
        assert response.status == 200, await response.text()
        return await response.json()


def _frames_from(peer: SyntheticPeer, other: SyntheticPeer) -> int:
    assert other.participant_id is not None
    return sum(m.counts().frames for m in peer.meter.of_source(other.participant_id))


async def test_serve_ejects_who_a_replaced_database_moves_into_a_denied_country_and_keeps_it_on_a_bad_file(
    tmp_path: Path,
) -> None:
    database = write_contract_database(tmp_path / "GeoLite2-Country.mmdb")
    log = tmp_path / "serve.log"
    stderr = os.open(log, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            *("-m", "sfu_geofence", "serve", "--loopback-only", "--port", "0", "--db", str(database)),
            *("--db-watch", "0.2", "--state-dir", str(tmp_path / "state")),
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
            env={**os.environ, "PYTHONPATH": str(ROOT), TOKEN_ENV: TOKEN},
        )
    finally:
        os.close(stderr)
    peers: list[SyntheticPeer] = []
    try:
        assert process.stdout is not None
        ws = (await asyncio.wait_for(process.stdout.readline(), 60)).decode().split()[-1]
        admin = (await asyncio.wait_for(process.stdout.readline(), 60)).decode()
        assert admin.startswith("admin listening on "), admin
        url = admin.split()[3]  # the operator API is on the admin listener
        async with aiohttp.ClientSession() as session:
            await _api(session, url, "PUT", "/rooms/room/policy", countries=["CN"])
            de, us, tw = peers = [
                SyntheticPeer(ws, "room", HostContract.address(c), name=c, tracks=synthetic_tracks())
                for c in ("DE", "US", "TW")
            ]
            for peer in peers:
                await peer.join()
                assert peer.participant_id is not None, peer.messages
            await eventually(
                lambda: None if _frames_from(us, tw) and _frames_from(tw, us) else "no media", within=30
            )

            # geoipupdate's way: the DE range is now in CN. Nobody calls the API.
            replace_atomically(database, write_contract_database(tmp_path / "moved.mmdb", moved={"DE": "CN"}))
            await asyncio.wait_for(de.closed.wait(), 20)
            assert de.close_code == 4409
            assert (
                de.messages[-1]
                == EjectedMessage(
                    "You were removed: this meeting is no longer accessible from China (CN)."
                ).to_message()
            )
            before = (_frames_from(us, tw), _frames_from(tw, us))
            await eventually(
                lambda: (
                    None
                    if (_frames_from(us, tw), _frames_from(tw, us)) >= (before[0] + 10, before[1] + 10)
                    else "US and TW stopped receiving each other"
                ),
                within=20,
            )
            built = (await _api(session, url, "GET", "/database"))["built"]

            # A corrupt file replaces it: the moved build keeps deciding, the alarm is up.
            corrupt = tmp_path / "corrupt.mmdb"
            corrupt.write_bytes(database.read_bytes()[:500])
            replace_atomically(database, corrupt)

            async def alarm() -> Any:
                while (found := await _api(session, url, "GET", "/database"))["alarm"] is None:
                    await asyncio.sleep(0.1)
                return found

            described = await asyncio.wait_for(alarm(), 20)
            assert described["built"] == built
            assert "cannot be read" in described["alarm"]["message"]
            assert not us.closed.is_set()
            assert not tw.closed.is_set()
            rejoin = SyntheticPeer(ws, "room", HostContract.address("DE"))
            try:
                await rejoin.join(publish={})
                assert [m["type"] for m in rejoin.messages] == ["refused"], "the moved build still decides"
            finally:
                await rejoin.close()
            events = await _api(session, url, "GET", "/audit?kind=database")
            assert [e["outcome"] for e in events["events"]] == ["loaded", "loaded", "reload_failed"]
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 30) == 0
    finally:
        for peer in peers:
            await peer.close()
        await stop(process)
    text = log.read_text()
    assert "ERROR sfu_geofence.core.geofence database reload failed, keeping" in text
    assert "Traceback" not in text
