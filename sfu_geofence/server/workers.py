"""``serve --workers N``: N SFU processes on one machine acting as one geofence through one Redis.

Python runs one core per process, so one ``serve`` saturates one core (issue 11). The parent started
by ``serve --workers N`` serves nothing itself: it starts a private ``redis-server`` when no
``--redis`` is given (unix socket in a private temporary directory, data in ``--state-dir``/redis,
append-only with ``appendfsync always``), then N worker processes, each an ordinary ``serve --redis``
node on its own ports: worker i (0-based) on ``--port + i`` and its admin listener on ``admin port + i``
(every port free-picked when ``--port`` is 0). Clients reach a worker by its own URL, which is also
the URL a redirect to it names; each worker keeps its audit log in ``--state-dir``/worker-<i+1>.

SIGTERM or SIGINT on the parent drains every worker (each tells its participants ``shutdown``) and then
stops the private Redis. A worker that dies is reported and the others carry on (their rooms' media
is theirs). See docs/operations.md, "Many cores: --workers".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path

from .. import eventloop
from ..core.errors import GeofenceError
from .app import ServerConfig

logger = logging.getLogger(__name__)

START_TIMEOUT_S = 60.0
"""How long a worker may take to listen (a loaded machine importing aiortc)."""
STOP_MARGIN_S = 5.0
"""Beyond the drain timeout, how long a worker may take to exit before it is killed."""


@dataclass(frozen=True)
class WorkerListening:
    """What a worker tells the parent once it listens (its bound URLs)."""

    public: str
    admin: str


@dataclass(frozen=True)
class WorkerFailed:
    """What a worker tells the parent when it cannot start (the message ``serve`` would print)."""

    error: str


@dataclass
class _Worker:
    index: int
    process: BaseProcess
    conn: Connection
    listening: WorkerListening | None = None


def worker_configs(config: ServerConfig, count: int, redis_url: str) -> list[ServerConfig]:
    """Each worker's configuration: the shared Redis, its own ports, its own audit directory.

    Raises ValueError when the public and admin port ranges overlap or leave the valid range.
    """
    port, admin = config.port, config.admin_listener.port
    if port:
        public_ports, admin_ports = range(port, port + count), range(admin, admin + count)
        if admin and set(public_ports) & set(admin_ports):
            raise ValueError(
                f"--workers {count}: public ports {port}-{port + count - 1} and admin ports "
                f"{admin}-{admin + count - 1} overlap (give --admin-port {port + count})"
            )
        if port + count - 1 > 65535 or admin + count - 1 > 65535:
            raise ValueError(f"--workers {count}: ports from {port}/{admin} run past 65535")
    configs = []
    for i in range(count):
        state = config.state
        if state.directory is not None:
            state = replace(state, directory=state.directory / f"worker-{i + 1}")
        configs.append(
            replace(
                config,
                port=port + i if port else 0,
                admin_listener=replace(config.admin_listener, port=admin + i if admin else 0),
                redis_url=redis_url,
                state=state,
            )
        )
    return configs


def _worker_main(
    conn: Connection,
    index: int,
    config: ServerConfig,
    use_uvloop: bool,
    configure_logging: Callable[[], None],
) -> None:
    """A worker process: serve ``config`` and tell the parent where it listens (or why it cannot)."""
    os.setpgrp()  # the parent forwards signals: a Ctrl-C reaching us twice would cut the drain short
    configure_logging()
    for handler in logging.getLogger().handlers:  # every worker logs to the same stderr: say which
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s worker-{index + 1} %(levelname)s %(name)s %(message)s")
        )
    from .serve import serve

    def announce(public: str, admin: str) -> None:
        conn.send(WorkerListening(f"{public}/ws", admin))
        # The parent writes nothing more: the pipe turns readable when it is gone (even by kill -9).
        # Drain then, as if it had sent SIGTERM, rather than serve on as an orphan nobody stops.
        loop = asyncio.get_running_loop()

        def parent_gone() -> None:
            loop.remove_reader(conn.fileno())
            logger.error("the parent serve process is gone: draining")
            os.kill(os.getpid(), signal.SIGTERM)

        loop.add_reader(conn.fileno(), parent_gone)

    if config.state.directory is not None:
        config.state.directory.mkdir(parents=True, exist_ok=True)
    try:
        drained = eventloop.run(serve(config, announce=announce), use_uvloop=use_uvloop)
    except (GeofenceError, ValueError, OSError) as exc:
        conn.send(WorkerFailed(str(exc)))
        sys.exit(2)
    except KeyboardInterrupt:
        drained = False
    sys.exit(0 if drained else 1)


class Supervisor:
    """Runs the private Redis (if any) and the workers, until a signal stops them all."""

    def __init__(
        self,
        config: ServerConfig,
        count: int,
        *,
        use_uvloop: bool,
        configure_logging: Callable[[], None],
        announce: Callable[[str], None] = lambda line: print(line, flush=True),
    ) -> None:
        if count < 2:
            raise ValueError("a supervisor runs 2 workers or more (one is plain serve)")
        self.config = config
        self.count = count
        self.use_uvloop = use_uvloop
        self.configure_logging = configure_logging
        self.announce = announce
        self.workers: list[_Worker] = []
        self._context = multiprocessing.get_context("spawn")

    async def run(self) -> int:
        """Serve until SIGTERM/SIGINT; 0 when every worker drained in time, 1 otherwise.

        Raises OSError (``redis-server`` missing) or GeofenceError (Redis unreachable) before any
        worker starts, which ``serve`` turns into exit status 2 naming it.
        """
        from ..cluster.redisserver import MISSING, REDIS_SERVER, RedisServer

        private: RedisServer | None = None
        socket_dir: str | None = None
        url = self.config.redis_url
        if url is None:
            if shutil.which(REDIS_SERVER) is None:
                raise FileNotFoundError(
                    f"--workers {self.count} without --redis starts a private {REDIS_SERVER}: {MISSING}"
                )
            # A short private path: unix socket paths are limited to ~107 bytes, a --state-dir is not.
            socket_dir = tempfile.mkdtemp(prefix="sfu-geofence-redis-")
            data = self.config.state.directory
            data_dir = Path(socket_dir) if data is None else data / "redis"
            data_dir.mkdir(parents=True, exist_ok=True)
            private = RedisServer(data_dir, unix_socket=Path(socket_dir) / "redis.sock")
        try:
            if private is not None:
                await private.start()
                url = private.url
                where = data_dir if self.config.state.directory else "a temporary directory"
                self.announce(
                    f"redis: private {REDIS_SERVER} pid {private.pid} on {private.unix_socket} "
                    f"(appendonly, appendfsync always, files in {where})"
                )
            assert url is not None
            await self._check_reachable(url)
            return await self._serve(worker_configs(self.config, self.count, url))
        finally:
            await self._stop_workers()
            if private is not None:
                await private.stop()
            if socket_dir is not None:
                shutil.rmtree(socket_dir, ignore_errors=True)

    async def _check_reachable(self, url: str) -> None:
        """Exit 2 naming Redis before N workers each fail to reach it (and seed the default once)."""
        from ..cluster.redisstore import RedisPolicyStore

        store = await RedisPolicyStore.open(url)
        await store.aclose()

    async def _serve(self, configs: list[ServerConfig]) -> int:
        loop = asyncio.get_running_loop()
        signals = asyncio.Queue[int]()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, signals.put_nowait, signum)
        try:
            for index, config in enumerate(configs):
                self._start(index, config)
            for worker in self.workers:
                await self._listening(worker)
            received = await self._until_signal_or_all_gone(signals)
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)
        if received is not None:
            logger.info("%s: draining %d workers", signal.Signals(received).name, self.count)
        return await self._drain()

    def _start(self, index: int, config: ServerConfig) -> None:
        ours, theirs = self._context.Pipe()
        process = self._context.Process(
            target=_worker_main,
            args=(theirs, index, config, self.use_uvloop, self.configure_logging),
            name=f"sfu-geofence-worker-{index + 1}",
        )
        process.start()
        theirs.close()
        self.workers.append(_Worker(index, process, ours))

    async def _listening(self, worker: _Worker) -> None:
        """Wait for the worker's address (or its error: raised, so ``serve`` exits 2 with it)."""
        loop = asyncio.get_running_loop()
        ready = await asyncio.wait_for(
            loop.run_in_executor(None, worker.conn.poll, START_TIMEOUT_S), START_TIMEOUT_S + 1
        )
        try:
            message = worker.conn.recv() if ready else None
        except (EOFError, OSError):  # it died before saying anything (its traceback is on stderr)
            worker.process.join(5)
            raise GeofenceError(
                f"worker {worker.index + 1} exited with status {worker.process.exitcode} before listening"
            ) from None
        if isinstance(message, WorkerFailed):
            raise GeofenceError(f"worker {worker.index + 1}: {message.error}")
        if not isinstance(message, WorkerListening):
            raise GeofenceError(f"worker {worker.index + 1} did not start within {START_TIMEOUT_S:g} s")
        worker.listening = message
        self.announce(
            f"worker {worker.index + 1} pid {worker.process.pid} listening on {message.public} "
            f"admin {message.admin}"
        )

    async def _until_signal_or_all_gone(self, signals: asyncio.Queue[int]) -> int | None:
        """The signal received, or None when every worker has exited; a worker's death is logged."""
        reported: set[int] = set()
        while True:
            with contextlib.suppress(TimeoutError):
                return await asyncio.wait_for(signals.get(), 0.2)
            for worker in self.workers:
                code = worker.process.exitcode
                if code is not None and worker.index not in reported:
                    reported.add(worker.index)
                    logger.error(
                        "worker %d (pid %s) exited with status %s; the other workers carry on",
                        worker.index + 1,
                        worker.process.pid,
                        code,
                    )
            if len(reported) == len(self.workers):
                logger.error("every worker has exited: stopping")
                return None

    async def _drain(self) -> int:
        """SIGTERM every worker (each drains), wait for them all; 0 when all drained in time."""
        for worker in self.workers:
            if worker.process.exitcode is None and worker.process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.process.pid, signal.SIGTERM)
        deadline = asyncio.get_running_loop().time() + self.config.drain_timeout + STOP_MARGIN_S
        while any(w.process.exitcode is None for w in self.workers):
            if asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.05)
        return 0 if all(w.process.exitcode == 0 for w in self.workers) else 1

    async def _stop_workers(self) -> None:
        """Kill whatever worker is still running (after a drain that timed out, or a failed start)."""
        for worker in self.workers:
            if worker.process.exitcode is None and worker.process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.process.pid, signal.SIGKILL)
            worker.process.join(5)
            worker.conn.close()
