"""The coordinator of a load run: server, workers, scenario clock, progress, and the record.

Order of a run: plan (:mod:`.scenario`); with ``--spawn`` build a test database that puts each
country's loopback network in that country and start ``python -m sfu_geofence serve`` with a fresh
operator token; start the worker processes (participants killed by a step get a worker each); wait
until everybody present from the start has joined and receives everybody else in the room (then the
scenario clock starts: t = 0); run the steps at their times; at ``--duration`` collect every worker's
measurements and stop everything. Every process started is stopped in ``finally``, on Ctrl-C too.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import multiprocessing
import os
import secrets
import signal
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import aiohttp
import redis.asyncio as aioredis

from .. import eventloop
from ..cluster.redisserver import RedisServer, free_port, server_version
from ..core.dbbuild import build_database
from ..core.policy import RoomPolicy
from ..server.admin_listener import DEFAULT_ADMIN_PORT
from ..synthetic.media import AudioClipParams, VideoClipParams, encode_opus_clip, encode_vp8_clip
from .report import NodeRecord, RoomRequest, RunRecord, StepRecord
from .scenario import AddStep, CountryCount, KillStep, PeerSpec, Plan, PolicyStep, Step, plan_scenario
from .worker import (
    Add,
    Finish,
    Mark,
    PeerEvent,
    Progress,
    WorkerConfig,
    WorkerResult,
    worker_main,
)

TOKEN_ENV = "SFU_GEOFENCE_ADMIN_TOKEN"
SERVER_START_TIMEOUT_S = 60.0
RESULT_TIMEOUT_S = 60.0
PACKAGE_ROOT = Path(__file__).resolve().parents[2]
"The directory holding this sfu_geofence package: the spawned server imports the same code."


class LoadTestError(Exception):
    """The run could not be carried out (server would not start, operator API refused, ...)."""


@dataclass(frozen=True)
class LoadTestConfig:
    countries: tuple[CountryCount, ...]
    rooms: int = 1
    steps: tuple[Step, ...] = ()
    duration: float = 20.0
    url: str | None = None
    """A running server's signaling URL; None: spawn one."""
    admin_url: str | None = None
    """The running server's admin listener (operator API under ``/api``); None: the host of ``url``
    on the default admin port."""
    admin_token: str | None = None
    networks: Mapping[str, ipaddress.IPv4Network] = field(default_factory=dict)
    workers: int = 2
    video: VideoClipParams = field(default_factory=VideoClipParams)
    audio: AudioClipParams = field(default_factory=AudioClipParams)
    setup_timeout: float = 60.0
    join_timeout: float = 30.0
    state_dir: Path | None = None
    """With a spawned server: its ``--state-dir``, kept after the run (``sfu-geofence report`` reads
    its audit log); None: the server keeps its state in memory."""
    uvloop: bool = True
    """The coordinator, the workers and a spawned server run on uvloop (False: asyncio's loop)."""
    janus_ice: str | None = None
    """``--janus ADDRESS``: ``url`` is a geofenced Janus's HTTP API (``sfu-geofence janus``), and the
    participants' media goes from ADDRESS, where that Janus gathers."""
    nodes: int = 1
    """With a spawned server: how many ``serve --redis`` nodes to start (more than 1: a redis-server
    too, rooms spread over the nodes round robin, policy steps sent through the first node)."""


def signaling_url(text: str) -> str:
    """``http://127.0.0.1:8080`` or ``.../ws`` -> the WebSocket URL; the server must be on loopback."""
    parts = urlsplit(text if "://" in text else f"http://{text}")
    if parts.scheme not in ("http", "ws") or not parts.hostname:
        raise ValueError(f"--url {text!r}: expected http://HOST:PORT[/ws]")
    try:
        loopback = ipaddress.ip_address(parts.hostname).is_loopback
    except ValueError:
        loopback = parts.hostname == "localhost"
    if not loopback:
        raise ValueError(
            f"--url {text!r}: participants use loopback addresses, so the server must be on loopback"
        )
    path = parts.path.rstrip("/")
    return f"http://{parts.netloc}{path if path.endswith('/ws') else path + '/ws'}"


def janus_api_url(text: str) -> str:
    """``http://127.0.0.1:8089`` or ``.../janus`` -> the gate's Janus API URL; on loopback."""
    base = signaling_url(text).removesuffix("/ws").removesuffix("/janus")
    return f"{base}/janus"


def admin_base_url(text: str | None, signaling: str) -> str:
    """``--admin-url`` (``http://HOST:PORT``), by default the signaling server's host on the default
    admin port; on loopback, as the participants are."""
    if text is None:
        host = urlsplit(signaling).hostname or "127.0.0.1"
        return f"http://{f'[{host}]' if ':' in host else host}:{DEFAULT_ADMIN_PORT}"
    return signaling_url(text).removesuffix("/ws")


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process from /proc (None once it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def media_description(video: VideoClipParams, audio: AudioClipParams) -> dict[str, Any]:
    """The media every participant sends, as the report states it."""
    vclip = encode_vp8_clip(video)
    encode_opus_clip(audio)  # (hard CBR: its bitrate is the configured one)
    return {
        "video": {
            "codec": "VP8",
            "width": video.width,
            "height": video.height,
            "fps": video.fps,
            "target_kbps": video.bitrate / 1000,
            "clip_kbps": round(vclip.bitrate / 1000, 1),
            "keyframe_interval_s": video.keyframe_interval_s,
        },
        "audio": {
            "codec": "opus",
            "frame_ms": audio.frame_ms,
            "kbps": audio.bitrate / 1000,
            "packets_per_s": 1000 / audio.frame_ms,
        },
        "pre_encoded": True,
        "received_decoded": False,
    }


@dataclass
class _Node:
    """One spawned ``serve`` process."""

    index: int
    name: str
    process: asyncio.subprocess.Process
    log: Path
    url: str = ""
    admin: str = ""
    cpu_t0: float | None = None
    cpu_end: float | None = None


@dataclass
class _WorkerHandle:
    process: BaseProcess
    conn: Connection
    peers: list[str]
    dedicated: bool
    """Runs one participant that a kill step SIGKILLs."""
    progress: Progress | None = None
    result: WorkerResult | None = None
    alive: bool = True
    cpu_at_t0: float = 0.0


class LoadRunner:
    """Runs one scenario; :meth:`run` returns the plan and the record for :func:`~.report.build_report`."""

    def __init__(self, config: LoadTestConfig, out: IO[str] = sys.stderr) -> None:
        self.config = config
        self.out = out
        self.events: list[PeerEvent] = []
        self.workers: list[_WorkerHandle] = []
        self.steps: list[StepRecord] = []
        self.killed: dict[str, float] = {}
        self.t0: float | None = None
        self._started = time.monotonic()
        self._nodes: list[_Node] = []
        self._redis: RedisServer | None = None
        self._room_urls: dict[str, str] = {}
        self._ctx = multiprocessing.get_context("spawn")
        self._next_worker = 0
        self._results = asyncio.Event()

    # -- output -----------------------------------------------------------------------------------------

    def say(self, text: str) -> None:
        now = time.monotonic()
        clock = f"{now - self.t0:7.2f}s" if self.t0 is not None else f"setup {now - self._started:5.1f}s"
        print(f"[{clock}] {text}", file=self.out, flush=True)

    # -- the run ----------------------------------------------------------------------------------------

    async def run(self) -> tuple[Plan, RunRecord]:
        load_start = list(os.getloadavg())
        with tempfile.TemporaryDirectory(prefix="sfu-geofence-loadtest-") as scratch:
            try:
                return await self._run(Path(scratch), load_start)
            finally:
                await self._stop_workers()
                await asyncio.gather(*(self._stop_server(node) for node in self._nodes))
                if self._redis is not None:
                    await self._redis.stop()
                for node in self._nodes:
                    tail = node.log.read_text(errors="replace").strip().splitlines()[-20:]
                    if tail:
                        print(f"{node.name} log (last lines):\n  " + "\n  ".join(tail), file=self.out)

    async def _run(self, scratch: Path, load_start: list[float]) -> tuple[Plan, RunRecord]:
        config = self.config
        token = config.admin_token
        redis_info: dict[str, Any] | None = None
        if config.url is None:
            plan = self._plan({})
            token = secrets.token_urlsafe(32)
            url, admin = await self._spawn_servers(scratch, plan, token)
        else:
            url = janus_api_url(config.url) if config.janus_ice is not None else signaling_url(config.url)
            admin = admin_base_url(config.admin_url, url)
            if token is None and any(isinstance(s, PolicyStep) for s in config.steps):
                raise LoadTestError(f"policy steps need the operator token: --admin-token or ${TOKEN_ENV}")
            initial = await self._read_policies(admin, token) if token else {}
            plan = self._plan(initial)
        media = media_description(config.video, config.audio)
        self.say(
            f"{len(plan.initial_peers)} participants in {len(plan.rooms)} rooms on {url}; "
            f"video VP8 {config.video.width}x{config.video.height}@{config.video.fps} "
            f"{media['video']['clip_kbps']} kbit/s, audio opus {config.audio.frame_ms} ms "
            f"{media['audio']['kbps']:g} kbit/s"
        )
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        # Connections kept open for the whole run: a step's requests then leave at once over
        # connections opened at set-up, not one after another as each TCP handshake completes.
        connector = aiohttp.TCPConnector(keepalive_timeout=config.setup_timeout + config.duration + 60)
        async with aiohttp.ClientSession(base_url=admin, headers=headers, connector=connector) as api:
            if token:
                await self._open_connections(api, plan)
            redis_before_joins, joins_started = await self._redis_commands(), time.monotonic()
            self._start_workers(plan, url)
            progress = asyncio.ensure_future(self._print_progress(plan))
            try:
                setup_complete = await self._wait_for_setup(plan)
                t0 = self.t0 = time.monotonic()
                for handle in self._live():
                    handle.conn.send(Mark())
                    handle.cpu_at_t0 = cpu_seconds(handle.process.pid or 0) or 0.0
                for node in self._nodes:
                    node.cpu_t0 = cpu_seconds(node.process.pid)
                redis_t0 = await self._redis_commands()
                joins_s = time.monotonic() - joins_started
                own_cpu_t0 = time.process_time()
                self.say("scenario starts" + ("" if setup_complete else " (setup incomplete, see above)"))
                for planned in plan.steps:
                    await asyncio.sleep(max(0.0, t0 + planned.step.at - time.monotonic()))
                    await self._execute(plan, planned.index, api, url)
                await asyncio.sleep(max(0.0, t0 + config.duration - time.monotonic()))
                t_end = time.monotonic()
                for node in self._nodes:
                    node.cpu_end = cpu_seconds(node.process.pid)
                generator_cpu = self._generator_cpu() + time.process_time() - own_cpu_t0
                redis_info = await self._redis_report(redis_t0)
                if redis_info is not None:
                    redis_info["setup"] = {
                        "seconds": round(joins_s, 3),
                        "commands": _during(redis_before_joins, redis_t0),
                    }
                self.say("scenario ends: collecting measurements")
            finally:
                progress.cancel()
            await self._collect()
        tracks = [t for h in self.workers if h.result for t in h.result.tracks]
        record = RunRecord(
            url=url,
            spawned=config.url is None,
            t0=t0,
            t_end=t_end,
            setup_complete=setup_complete,
            events=list(self.events),
            steps=self.steps,
            tracks=tracks,
            media=media,
            workers=len(self.workers),
            sfu_cpu_s=_total([_spent(n) for n in self._nodes]),
            generator_cpu_s=generator_cpu,
            load_average={"start": load_start, "end": list(os.getloadavg())},
            killed=dict(self.killed),
            loop_lag_max_ms=max((h.result.loop_lag_max_ms for h in self.workers if h.result), default=0.0),
            stalls=[stall for h in self.workers if h.result for stall in h.result.stalls],
            nodes=[
                NodeRecord(
                    node.name,
                    node.url,
                    node.process.pid,
                    tuple(room for room, url in self._room_urls.items() if url == node.url),
                    _spent(node),
                )
                for node in self._nodes
            ]
            if len(self._nodes) > 1
            else [],
            redis=redis_info,
        )
        return plan, record

    def _plan(self, initial: Mapping[str, RoomPolicy]) -> Plan:
        c = self.config
        return plan_scenario(
            c.countries, c.rooms, c.steps, duration=c.duration, networks=c.networks, initial_policies=initial
        )

    # -- server -----------------------------------------------------------------------------------------

    async def _spawn_servers(self, scratch: Path, plan: Plan, token: str) -> tuple[str, str]:
        """Start ``serve`` (with ``nodes`` > 1: a redis-server and that many ``serve --redis`` nodes, the
        rooms spread over them); returns the first node's signaling URL and admin base URL."""
        database = build_database(
            scratch / "loadtest.mmdb", [f"{net}={country}" for country, net in plan.networks.items()]
        )
        count = self.config.nodes
        redis_url: str | None = None
        if count > 1:
            directory = scratch / "redis"
            directory.mkdir()
            self._redis = RedisServer(directory, free_port())
            try:
                await self._redis.start()
            except (OSError, RuntimeError) as exc:
                raise LoadTestError(f"--nodes {count} needs a redis-server: {exc}") from None
            redis_url = self._redis.url
            version = await server_version(redis_url)
            self.say(f"redis-server {version} pid {self._redis.pid} on {redis_url} (appendfsync always)")
        await asyncio.gather(
            *(self._spawn_server(scratch, plan, token, database, i, redis_url) for i in range(count))
        )
        if count > 1:
            self._room_urls = {room: self._nodes[k % count].url for k, room in enumerate(plan.rooms)}
            for node in self._nodes:
                rooms = [room for room, url in self._room_urls.items() if url == node.url]
                self.say(f"{node.name} hosts {', '.join(rooms) or 'no room'}")
        return self._nodes[0].url, self._nodes[0].admin

    async def _spawn_server(
        self, scratch: Path, plan: Plan, token: str, database: Path, index: int, redis_url: str | None
    ) -> None:
        """Start one ``serve`` (a node of the cluster when ``redis_url`` is given)."""
        name = f"node-{index + 1}" if redis_url else "server"
        log_path = scratch / f"{name}.log"
        config_uvloop = self.config.uvloop
        package_root = str(PACKAGE_ROOT)
        path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH", "")) if p)
        state_dir = self.config.state_dir
        if state_dir is not None and redis_url:
            state_dir = state_dir / name
        with log_path.open("wb") as log:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "sfu_geofence",
                "serve",
                "--port",
                "0",
                "--loopback-only",
                "--db",
                str(database),
                "--log-level",
                "warning",
                *(("--state-dir", str(state_dir)) if state_dir else ()),
                *(("--redis", redis_url, "--node-id", name) if redis_url else ()),
                # everybody joins at once: more joins in progress than a server's default allows
                "--cap-pending-joins",
                str(max(64, 2 * len(plan.initial_peers))),
                *(() if config_uvloop else ("--no-uvloop",)),
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                start_new_session=True,  # own process group: Ctrl-C is ours to handle; we kill the group
                env={**os.environ, TOKEN_ENV: token, "PYTHONPATH": path},
            )
        node = _Node(index, name, process, log_path)
        self._nodes.append(node)
        self._nodes.sort(key=lambda n: n.index)
        assert process.stdout is not None
        try:
            line = await asyncio.wait_for(process.stdout.readline(), SERVER_START_TIMEOUT_S)
        except TimeoutError:
            line = b""
        text = line.decode(errors="replace").strip()
        if not text.startswith("listening on "):
            raise LoadTestError(f"the spawned {name} did not start (said {text!r}); see its log below")
        admin = (await process.stdout.readline()).decode(errors="replace").strip()
        if not admin.startswith("admin listening on "):
            raise LoadTestError(f"the spawned {name} has no admin listener (said {admin!r})")
        node.url, node.admin = text.split()[-1], admin.split()[3]
        mapping = ", ".join(f"{c}={n}" for c, n in plan.networks.items())
        self.say(f"{name} pid {process.pid}: {text} (database {mapping})")

    async def _redis_commands(self) -> dict[str, int]:
        """Calls per Redis command so far (INFO commandstats); empty without a Redis of ours."""
        if self._redis is None:
            return {}
        client = aioredis.Redis.from_url(self._redis.url)
        try:
            stats = await client.info("commandstats")
        finally:
            await client.aclose()
        return {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()}

    async def _redis_report(self, at_t0: dict[str, int]) -> dict[str, Any] | None:
        """The Redis the nodes shared: its version, and the commands it ran during the scenario."""
        if self._redis is None:
            return None
        return {
            "version": await server_version(self._redis.url),
            "url": self._redis.url,
            "commands": _during(at_t0, await self._redis_commands()),
        }

    async def _stop_server(self, node: _Node) -> None:
        process = node.process
        if process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()

    async def _open_connections(self, api: aiohttp.ClientSession, plan: Plan) -> None:
        """As many connections to the operator API as a step may send requests at once (one per
        room), opened now by reading every room's policy at once."""

        async def read(room: str) -> None:
            async with api.get(f"/api/rooms/{room}/policy") as response:
                await response.read()

        await asyncio.gather(*(read(room) for room in plan.rooms))

    async def _read_policies(self, base: str, token: str) -> dict[str, RoomPolicy]:
        policies: dict[str, RoomPolicy] = {}
        async with aiohttp.ClientSession(base_url=base, headers={"Authorization": f"Bearer {token}"}) as api:
            for room in self._plan({}).rooms:
                async with api.get(f"/api/rooms/{room}/policy") as response:
                    body = await response.json(content_type=None)
                    if response.status != 200:
                        raise LoadTestError(
                            f"GET /api/rooms/{room}/policy answered {response.status}: {body}"
                        )
                    policies[room] = RoomPolicy.from_dict(body["policy"])
        return policies

    # -- workers ----------------------------------------------------------------------------------------

    def _start_workers(self, plan: Plan, url: str) -> None:
        config = self.config
        shared: list[list[PeerSpec]] = [[] for _ in range(max(1, config.workers))]
        dedicated: list[PeerSpec] = []
        # Participants expected to be ejected share a process of their own: their side of an ejection
        # (closing a peer connection holds a loop 8-11 ms) must not pass for a gap the SFU made in the
        # media of participants who stay, which a real ejected client, on its own machine, never causes.
        leaving: list[PeerSpec] = []
        seats: dict[str, int] = {}
        for peer in plan.initial_peers:
            if peer.name in plan.kill_targets:
                dedicated.append(peer)
                continue
            if plan.expected[peer.name].outcome == "ejected":
                leaving.append(peer)
                continue
            # alternate within each room: every room spans the workers, so one busy worker
            # process cannot pass for a glitch of a whole room
            seat = seats[peer.room] = seats.get(peer.room, -1) + 1
            shared[(seat + plan.rooms.index(peer.room)) % len(shared)].append(peer)
        for peers in [*shared, leaving] if leaving else shared:
            self._spawn_worker(url, peers, dedicated=False)
        for peer in dedicated:
            self._spawn_worker(url, [peer], dedicated=True)
        self.say(
            f"{len(self.workers)} worker processes ({len(dedicated)} for participants to be killed, "
            f"{1 if leaving else 0} for those to be ejected): "
            + ", ".join(f"pid {h.process.pid}: {len(h.peers)}" for h in self.workers)
        )

    def _spawn_worker(self, url: str, peers: list[PeerSpec], *, dedicated: bool) -> _WorkerHandle:
        ours, theirs = self._ctx.Pipe()
        config = WorkerConfig(
            url=url,
            room_urls=dict(self._room_urls),
            video=self.config.video,
            audio=self.config.audio,
            peers=tuple(peers),
            join_timeout=self.config.join_timeout,
            uvloop=self.config.uvloop,
            janus_ice=self.config.janus_ice,
        )
        process = self._ctx.Process(
            target=worker_main,
            args=(theirs, config),
            name=f"loadtest-worker-{len(self.workers)}",
            daemon=True,
        )
        process.start()
        theirs.close()
        handle = _WorkerHandle(process, ours, [p.name for p in peers], dedicated)
        self.workers.append(handle)
        eventloop.add_blocking_reader(ours.fileno(), self._on_readable, handle)
        return handle

    def _live(self) -> list[_WorkerHandle]:
        return [h for h in self.workers if h.alive]

    def _on_readable(self, handle: _WorkerHandle) -> None:
        try:
            while handle.conn.poll():
                self._on_message(handle, handle.conn.recv())
        except (EOFError, OSError):
            self._gone(handle)

    def _gone(self, handle: _WorkerHandle) -> None:
        if handle.alive:
            handle.alive = False
            asyncio.get_running_loop().remove_reader(handle.conn.fileno())
            if handle.result is None and not any(name in self.killed for name in handle.peers):
                self.say(f"worker pid {handle.process.pid} exited unexpectedly ({', '.join(handle.peers)})")
            self._results.set()

    def _on_message(self, handle: _WorkerHandle, message: object) -> None:
        if isinstance(message, PeerEvent):
            self.events.append(message)
            detail = f" in {message.join_ms:.0f} ms" if message.join_ms is not None else ""
            if message.close_code is not None:
                detail += f" (close {message.close_code})"
            if message.detail:
                detail += f": {message.detail}"
            self.say(f"{message.peer} {message.kind}{detail}")
        elif isinstance(message, Progress):
            handle.progress = message
        elif isinstance(message, WorkerResult):
            handle.result = message
            self._results.set()

    def _generator_cpu(self) -> float:
        total = 0.0
        for handle in self.workers:
            now = cpu_seconds(handle.process.pid or 0) if handle.alive else None
            if now is None and handle.progress is not None:
                now = handle.progress.cpu_s
            total += max(0.0, (now or 0.0) - handle.cpu_at_t0)
        return total

    async def _collect(self) -> None:
        for handle in self._live():
            with contextlib.suppress(OSError):
                handle.conn.send(Finish())
        deadline = time.monotonic() + RESULT_TIMEOUT_S
        while any(h.alive and h.result is None for h in self.workers) and time.monotonic() < deadline:
            self._results.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._results.wait(), max(0.0, deadline - time.monotonic()))
        missing = [h.process.pid for h in self.workers if h.alive and h.result is None]
        if missing:
            self.say(f"no measurements from worker(s) {missing} within {RESULT_TIMEOUT_S:g} s")

    async def _stop_workers(self) -> None:
        loop = asyncio.get_running_loop()
        for handle in self.workers:
            if handle.alive:
                with contextlib.suppress(OSError):
                    handle.conn.send(Finish())
        deadline = time.monotonic() + 15
        for handle in self.workers:
            while handle.process.is_alive() and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if handle.process.is_alive():
                handle.process.kill()
            handle.process.join(5)
            if handle.alive:
                handle.alive = False
                with contextlib.suppress(ValueError, OSError):
                    loop.remove_reader(handle.conn.fileno())
            handle.conn.close()

    # -- setup ------------------------------------------------------------------------------------------

    def _settled(self, plan: Plan) -> str | None:
        """None once everybody present from the start joined (or was refused) and receives the others."""
        state: dict[str, str] = {}
        ids: dict[str, str] = {}
        for event in self.events:
            state[event.peer] = event.kind
            if event.participant:
                ids[event.peer] = event.participant
        progress = {name: p for h in self.workers if h.progress for name, p in h.progress.peers.items()}
        waiting: list[str] = []
        for peer in plan.initial_peers:
            if peer.name not in state:
                waiting.append(f"{peer.name} not joined")
                continue
            if state[peer.name] != "joined":
                continue
            others = {
                ids[p.name]
                for p in plan.initial_peers
                if p.room == peer.room and p.name != peer.name and state.get(p.name) == "joined"
            }
            have = set(progress[peer.name].sources) if peer.name in progress else set()
            if not others <= have:
                waiting.append(f"{peer.name} receives {len(others & have)}/{len(others)}")
        return "; ".join(waiting) if waiting else None

    async def _wait_for_setup(self, plan: Plan) -> bool:
        deadline = time.monotonic() + self.config.setup_timeout
        while True:
            reason = self._settled(plan)
            if reason is None:
                return True
            if time.monotonic() > deadline:
                self.say(f"setup not complete within {self.config.setup_timeout:g} s: {reason}")
                return False
            if not self._live():
                raise LoadTestError("every worker process exited during setup")
            await asyncio.sleep(0.1)

    # -- steps ------------------------------------------------------------------------------------------

    async def _execute(self, plan: Plan, index: int, api: aiohttp.ClientSession, url: str) -> None:
        planned = plan.steps[index]
        step = planned.step
        record = StepRecord(index, step.text, time.monotonic())
        self.steps.append(record)
        if isinstance(step, PolicyStep):
            record.requests = await asyncio.gather(
                *(self._put_policy(api, room, policy) for room, policy in planned.policies.items())
            )
            summary = ", ".join(
                f"{r.room} {r.status or r.error} in "
                f"{1000 * ((r.answered_at or r.requested_at) - r.requested_at):.1f} ms "
                f"({len(r.ejections)} ejected)"
                for r in record.requests
            )
            self.say(f"step {step.text}: {summary}")
        elif isinstance(step, KillStep):
            name = planned.peers[0]
            handle = next(h for h in self.workers if h.dedicated and h.peers == [name])
            if handle.process.pid is not None and handle.process.is_alive():
                self.killed[name] = time.monotonic()
                os.kill(handle.process.pid, signal.SIGKILL)
            self.say(f"step {step.text}: SIGKILL {name} (worker pid {handle.process.pid})")
        elif isinstance(step, AddStep):
            for name in planned.peers:
                peer = plan.peer(name)
                if name in plan.kill_targets:
                    self._spawn_worker(url, [peer], dedicated=True)
                else:
                    shared = [h for h in self._live() if not h.dedicated]
                    handle = shared[self._next_worker % len(shared)]
                    self._next_worker += 1
                    handle.peers.append(name)
                    handle.conn.send(Add(peer))
            self.say(f"step {step.text}: adding {', '.join(planned.peers)}")

    async def _put_policy(self, api: aiohttp.ClientSession, room: str, policy: RoomPolicy) -> RoomRequest:
        request = RoomRequest(room, time.monotonic())
        try:
            async with api.put(f"/api/rooms/{room}/policy", json=policy.to_dict()) as response:
                body = await response.json(content_type=None)
                request.answered_at = time.monotonic()
                request.status = response.status
                if response.status != 200:
                    request.error = str(body)
                else:
                    request.ejections = [
                        e["participant"] for e in body.get("ejections", []) if e.get("outcome") == "requested"
                    ]
        except (aiohttp.ClientError, ValueError) as exc:
            request.error = f"{type(exc).__name__}: {exc}"
        return request

    # -- progress ---------------------------------------------------------------------------------------

    async def _print_progress(self, plan: Plan) -> None:
        last: tuple[float, int, int, float | None] | None = None
        while True:
            await asyncio.sleep(1.0)
            peers = [p for h in self._live() if h.progress for p in h.progress.peers.values()]
            now = time.monotonic()
            packets, size = sum(p.packets for p in peers), sum(p.bytes for p in peers)
            cpu = _total([cpu_seconds(node.process.pid) for node in self._nodes])
            rates = ""
            if last is not None and now > last[0]:
                dt = now - last[0]
                kbps, pps = (size - last[2]) * 8 / dt / 1000, (packets - last[1]) / dt
                rates = f" | rx {kbps:7.0f} kbit/s {pps:6.0f} pkt/s"
                if cpu is not None and last[3] is not None:
                    rates += f" | sfu cpu {100 * (cpu - last[3]) / dt:3.0f}%"
            last = (now, packets, size, cpu)
            counts = {
                kind: sum(e.kind == kind for e in self.events) for kind in ("refused", "ejected", "failed")
            }
            in_rooms = sum(p.joined for p in peers)
            tracks = sum(2 * len(p.sources) for p in peers)
            self.say(
                f"in rooms {in_rooms}/{len(plan.peers)} | refused {counts['refused']} ejected "
                f"{counts['ejected']} killed {len(self.killed)} failed {counts['failed']} | "
                f"{tracks} tracks{rates} | load {os.getloadavg()[0]:.1f}"
            )


def _during(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Calls per Redis command between two ``INFO commandstats`` readings (those that ran)."""
    return {
        name: calls - before.get(name, 0)
        for name, calls in sorted(after.items())
        if calls > before.get(name, 0)
    }


def _spent(node: _Node) -> float | None:
    """CPU seconds the node used during the scenario (None if it was gone at either end)."""
    return None if node.cpu_end is None or node.cpu_t0 is None else node.cpu_end - node.cpu_t0


def _total(values: list[float | None]) -> float | None:
    """The sum, or None when any is unknown (a process gone) or there is none."""
    if not values or any(v is None for v in values):
        return None
    return sum(v for v in values if v is not None)


def run_loadtest(config: LoadTestConfig, out: IO[str] = sys.stderr) -> tuple[Plan, RunRecord]:
    """Run a scenario to its end (blocking); Ctrl-C stops it and every process it started."""
    return eventloop.run(LoadRunner(config, out).run(), use_uvloop=config.uvloop)


__all__ = ["LoadRunner", "LoadTestConfig", "LoadTestError", "run_loadtest", "signaling_url"]
