"""``serve --workers N``: N real SFU processes, one geofence, one Redis (private or given), one command.

The test database puts 127.1/16 in US and 127.86/16 in CN; each peer's WebSocket and ICE are bound to
an address of its country, so the workers really see it there.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from pathlib import Path

import pytest

from sfu_geofence.synthetic.client import SyntheticPeer, everyone_receives
from sfu_geofence.testing.operator_api import operator_call
from sfu_geofence.testing.participants import join_refused, joined
from sfu_geofence.testing.process import spawn_serve, stop
from sfu_geofence.testing.redis import RedisServer, free_port
from sfu_geofence.testing.testdb import build_database
from sfu_geofence.testing.wait import eventually
from sfu_geofence.testing.workers import Workers, running_workers

pytestmark = pytest.mark.cluster

TOKEN = "workers-test-token-0123456789"
ENV = {"SFU_GEOFENCE_ADMIN_TOKEN": TOKEN}
CN, US, US2, US3 = "127.86.0.1", "127.1.0.1", "127.1.0.2", "127.1.0.3"
WITHIN = 30.0  # a loaded 2-core machine


@pytest.fixture
def database(tmp_path: Path, redis_installed: None) -> Path:
    return build_database(tmp_path / "countries.mmdb", ["127.1.0.0/16=US", "127.86.0.0/16=CN"])


def workers(count: int, *args: str) -> contextlib.AbstractAsyncContextManager[Workers]:
    return running_workers(count, *args, env=ENV)


def children_of(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/task/{pid}/children").read_text().split()


def gone(pid: int) -> bool:
    """True once no process has this pid (reaped by its parent)."""
    return not Path(f"/proc/{pid}").exists()


async def test_two_workers_share_a_private_redis_and_stop_with_the_parent_keeping_the_policies(
    database: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    args = ("--db", str(database), "--state-dir", str(state))
    async with workers(2, *args) as started:
        assert started.redis_pid is not None
        one, two = started.workers
        assert len({one.url, two.url, one.admin, two.admin}) == 4  # every worker on its own ports
        async with joined(two.url, "room", CN) as cn, joined(two.url, "room", US) as us:
            status, body = await operator_call(
                one.admin, TOKEN, "PUT", "/rooms/room/policy", {"mode": "deny", "countries": ["CN"]}
            )
            assert status == 200, body
            await asyncio.wait_for(cn.closed.wait(), WITHIN)
            assert cn.close_code == 4409, cn.messages
            assert not us.closed.is_set()
            started.process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(us.closed.wait(), WITHIN)
            assert (us.close_code, us.messages[-1]["type"], us.messages[-1]["reason"]) == (
                1001,
                "closing",
                "shutdown",
            )
            assert await asyncio.wait_for(started.process.wait(), WITHIN) == 0
        assert all(gone(pid) for pid in (started.redis_pid, one.pid, two.pid))
    assert sorted(p.name for p in state.iterdir()) == ["redis", "worker-1", "worker-2"]
    async with workers(2, *args) as again:
        status, body = await operator_call(again.workers[1].admin, TOKEN, "GET", "/rooms/room/policy")
        assert status == 200, body
        assert (body["policy"]["countries"], body["version"]) == (["CN"], 1)


async def test_kill_9_of_a_worker_disconnects_only_its_participants_and_its_room_rejoins_elsewhere(
    database: Path,
) -> None:
    async with (
        workers(2, "--db", str(database)) as started,
        joined(started.workers[0].url, "doomed", US) as doomed,
        joined(started.workers[1].url, "kept", US2, media=True) as a,
        joined(started.workers[1].url, "kept", US3, media=True) as b,
    ):
        await eventually(lambda: everyone_receives([a, b]), within=WITHIN)
        os.kill(started.workers[0].pid, signal.SIGKILL)
        await asyncio.wait_for(doomed.closed.wait(), WITHIN)
        before = {p.name: p.meters(str(o.participant_id), "video")[0].frames for p, o in ((a, b), (b, a))}
        await eventually(
            lambda: everyone_receives([a, b], minimum_frames=max(before.values()) + 40), within=WITHIN
        )
        assert not a.closed.is_set()
        assert not b.closed.is_set()
        # Through the other worker, within 5 s of the kill (with room placement, once the dead
        # worker's lease on the room has expired: until then the join is sent to the dead one).
        killed_at = asyncio.get_running_loop().time()

        async def rejoin() -> str | None:
            peer = SyntheticPeer(started.workers[1].url, "doomed", US, name="again", tracks=[])
            try:
                await peer.join(within=5.0)
                return None if peer.participant_id is not None else f"not admitted: {peer.messages}"
            except OSError as exc:  # aiohttp's ClientConnectorError: sent to the dead worker
                return f"{type(exc).__name__}: {exc}"
            finally:
                await peer.close()

        await eventually(rejoin, within=5.0, interval=0.2)
        assert asyncio.get_running_loop().time() - killed_at <= 5.0
        assert started.process.returncode is None  # the parent and the other worker carry on


async def test_without_redis_server_installed_workers_exit_2_naming_it(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    process = await spawn_serve(
        "--workers", "2", env={**ENV, "PATH": str(empty)}, stderr=asyncio.subprocess.PIPE
    )
    _, stderr = await asyncio.wait_for(process.communicate(), WITHIN)
    assert process.returncode == 2
    assert "--workers 2 without --redis starts a private redis-server: redis-server is not installed" in (
        stderr.decode()
    )


async def test_workers_with_an_unreachable_redis_exit_2_naming_it_and_start_no_worker() -> None:
    port = free_port()
    url = f"redis://:hunter2@127.0.0.1:{port}/0"
    process = await spawn_serve("--workers", "2", "--redis", url, env=ENV, stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await asyncio.wait_for(process.communicate(), WITHIN)
    assert process.returncode == 2
    assert f"cannot reach Redis at redis://127.0.0.1:{port}/0" in stderr.decode()
    assert "hunter2" not in stderr.decode()
    assert b"worker" not in stdout


async def test_workers_given_a_redis_use_it_and_start_none_of_their_own(
    database: Path, redis: RedisServer
) -> None:
    async with workers(2, "--db", str(database), "--redis", redis.url) as started:
        assert started.redis_pid is None
        status, body = await operator_call(
            started.workers[0].admin, TOKEN, "PUT", "/rooms/r/policy", {"mode": "deny", "countries": ["CN"]}
        )
        assert status == 200, body
        async with joined(started.workers[1].url, "r", US):
            pass
        refused = await join_refused(started.workers[1].url, "r", CN)
        assert refused.close_code == 4403, refused.messages


async def test_one_worker_without_redis_is_plain_serve_with_no_child_process(database: Path) -> None:
    process = await spawn_serve("--workers", "1", "--db", str(database), env=ENV)
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), WITHIN)).decode()
        assert line.startswith("listening on http://127.0.0.1:"), line
        assert children_of(process.pid) == []
    finally:
        await stop(process)


@pytest.mark.parametrize(("value", "message"), [("0", "0: at least 1 worker"), ("many", "'many': a number")])
async def test_a_bad_worker_count_is_refused_naming_it(value: str, message: str) -> None:
    process = await spawn_serve("--workers", value, stderr=asyncio.subprocess.PIPE)
    _, stderr = await asyncio.wait_for(process.communicate(), WITHIN)
    assert process.returncode == 2
    assert message in stderr.decode()


async def test_workers_whose_parent_is_killed_drain_and_exit_instead_of_serving_as_orphans(
    database: Path,
) -> None:
    async with workers(2, "--db", str(database)) as started, joined(started.workers[0].url, "r", US) as peer:
        started.process.send_signal(signal.SIGKILL)
        await asyncio.wait_for(peer.closed.wait(), WITHIN)
        assert (peer.close_code, peer.messages[-1]["reason"]) == (1001, "shutdown")
        await eventually(
            lambda: None if all(gone(w.pid) for w in started.workers) else "a worker still runs",
            within=WITHIN,
        )


async def test_a_worker_that_cannot_listen_stops_serve_with_status_2_naming_it_and_everything_it_started(
    database: Path,
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # worker 1 gets the port that is taken; worker 2 the next one
        process = await spawn_serve(
            "--workers", "2", "--port", str(port), "--admin-port", "0", "--db", str(database),
            env=ENV, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        stdout, stderr = await asyncio.wait_for(process.communicate(), WITHIN)
    assert process.returncode == 2, stderr.decode()
    assert "sfu-geofence serve: error: worker 1: " in stderr.decode()
    assert "address already in use" in stderr.decode()
    redis_pid = int(stdout.decode().split(" pid ")[1].split()[0])  # the private Redis it had started
    await eventually(
        lambda: None if gone(redis_pid) else "the private redis-server still runs", within=WITHIN
    )
