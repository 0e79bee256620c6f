"""A guard that turns "all traffic stays on loopback" into a failing test instead of a hope.

While installed, every ``connect``/``connect_ex``/``sendto``/``sendmsg`` on an internet socket whose
destination is not a loopback address raises :class:`NonLoopbackDestination` *before* anything is sent,
and is recorded so that a test session can fail even if some library swallowed the exception.

Inside a LAN namespace of the tests' own (:mod:`sfu_geofence.testing.netns`), and there only, the
addresses that namespace holds on its dummy interface are let through as well: they are local to it.

uvloop sends and connects in C (libuv), never through :class:`socket.socket`: a process that runs on
uvloop under the guard uses :meth:`LoopbackGuard.uvloop`, a uvloop loop whose datagram transports,
connections and ``sock_*`` calls are checked the same way.
"""

from __future__ import annotations

import asyncio
import functools
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvloop

from .core.addresses import parse_address

_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


class NonLoopbackDestination(OSError):
    """Raised instead of sending to an address outside 127.0.0.0/8 and ::1."""


@functools.lru_cache(maxsize=4096)
def is_loopback(host: str) -> bool:
    """True for loopback literals (127.0.0.0/8, ::1, ::ffff:127.x.y.z) and the name localhost.

    Cached: the guard runs on every ``sendto``, i.e. per RTP packet in a benchmarked SFU process
    (parsing the address each time cost ~10 us per packet), and a process talks to few hosts.
    """
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return parse_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class LoopbackGuard:
    """Record of what the guard refused while installed."""

    violations: list[str] = field(default_factory=list)
    """One line per refused destination: ``"sendto 192.0.2.2:5000"``."""
    also_allowed: Callable[[str], bool] | None = None
    """Destinations allowed besides loopback (a LAN namespace's own addresses), or None."""

    def _check(self, sock: socket.socket, op: str, address: Any) -> None:
        # Cheapest tests first: this runs once per packet sent.
        if not isinstance(address, tuple) or not address:
            return
        host = str(address[0])
        if self._allowed(host):
            return
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            line = f"{op} {host}:{address[1] if len(address) > 1 else '?'}"
            self.violations.append(line)
            raise NonLoopbackDestination(f"non-loopback destination refused by the test guard: {line}")

    def _check_address(self, op: str, address: Any) -> None:
        """The same check for an address a loop is given (a socket family is implied by the tuple)."""
        if isinstance(address, tuple) and address and not self._allowed(str(address[0])):
            line = f"{op} {address[0]}:{address[1] if len(address) > 1 else '?'}"
            self.violations.append(line)
            raise NonLoopbackDestination(f"non-loopback destination refused by the test guard: {line}")

    def _allowed(self, host: str) -> bool:
        return is_loopback(host) or (self.also_allowed is not None and self.also_allowed(host))

    def uvloop(self) -> asyncio.AbstractEventLoop:
        """A new uvloop event loop whose every destination is checked (a ``loop_factory``)."""
        return _GuardedUvloop(self)

    def loop_factory(self, use_uvloop: bool) -> Callable[[], asyncio.AbstractEventLoop]:
        """:meth:`uvloop`, or asyncio's loop (whose sockets the guard already checks)."""
        return self.uvloop if use_uvloop else asyncio.new_event_loop


class _GuardedDatagramTransport:
    """A datagram transport whose ``sendto`` checks the destination first (uvloop's cannot be patched)."""

    __slots__ = ("_checked", "_guard", "_transport")

    def __init__(self, transport: Any, guard: LoopbackGuard) -> None:
        self._transport = transport
        self._guard = guard
        self._checked: Any = None
        """The address object last let through: an SFU's egress sends every packet of a connection
        to its nominated pair's one (immutable) tuple, checked once rather than per packet."""

    def sendto(self, data: Any, addr: Any = None) -> None:
        if addr is not None and addr is not self._checked:
            self._guard._check_address("sendto", addr)
            self._checked = addr
        self._transport.sendto(data, addr)

    def sender_to(self, addr: Any) -> Callable[[Any], None]:
        """A function sending datagrams to ``addr`` only, checked now rather than per packet: the C
        ``sendto`` of the wrapped transport bound to that address (an SFU's egress, once per pair)."""
        self._guard._check_address("sendto", addr)
        return functools.partial(self._transport.sendto, addr=addr)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class _GuardedUvloop(uvloop.Loop):
    """uvloop with the guard's checks where uvloop bypasses :class:`socket.socket`."""

    def __init__(self, guard: LoopbackGuard) -> None:
        super().__init__()
        self._guard = guard

    async def create_datagram_endpoint(
        self, protocol_factory: Callable[[], Any], *args: Any, **kwargs: Any
    ) -> tuple[Any, Any]:
        remote = kwargs.get("remote_addr", args[1] if len(args) > 1 else None)
        self._guard._check_address("connect", remote)
        guard = self._guard

        def guarded_factory() -> Any:
            protocol = protocol_factory()
            made = protocol.connection_made

            def connection_made(transport: Any) -> None:
                made(_GuardedDatagramTransport(transport, guard))

            protocol.connection_made = connection_made
            return protocol

        transport, protocol = await super().create_datagram_endpoint(guarded_factory, *args, **kwargs)
        return _GuardedDatagramTransport(transport, guard), protocol

    async def create_connection(self, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
        host = kwargs.get("host", args[1] if len(args) > 1 else None)
        if host is not None:
            self._guard._check_address("connect", (host, kwargs.get("port", args[2] if len(args) > 2 else 0)))
        result: tuple[Any, Any] = await super().create_connection(*args, **kwargs)
        return result

    async def sock_connect(self, sock: socket.socket, address: Any) -> None:
        self._guard._check(sock, "connect", address)
        await super().sock_connect(sock, address)

    async def sock_sendto(self, sock: socket.socket, data: Any, address: Any) -> None:  # type: ignore[override]
        self._guard._check(sock, "sendto", address)
        await super().sock_sendto(sock, data, address)


@contextmanager
def loopback_only(also_allowed: Callable[[str], bool] | None = None) -> Iterator[LoopbackGuard]:
    """Install the guard on :class:`socket.socket` for the duration of the block.

    ``also_allowed`` lets more destinations through: :func:`netns.is_own_lan_address` in a LAN
    namespace (the conftest passes it there only).
    """
    guard = LoopbackGuard(also_allowed=also_allowed)
    originals: dict[str, Callable[..., Any]] = {
        name: getattr(socket.socket, name) for name in ("connect", "connect_ex", "sendto", "sendmsg")
    }

    def connect(sock: socket.socket, address: Any) -> None:
        guard._check(sock, "connect", address)
        originals["connect"](sock, address)

    def connect_ex(sock: socket.socket, address: Any) -> int:
        guard._check(sock, "connect_ex", address)
        result: int = originals["connect_ex"](sock, address)
        return result

    def sendto(sock: socket.socket, data: Any, *args: Any) -> int:
        guard._check(sock, "sendto", args[-1] if args else None)
        result: int = originals["sendto"](sock, data, *args)
        return result

    def sendmsg(sock: socket.socket, buffers: Any, *args: Any) -> int:
        guard._check(sock, "sendmsg", args[2] if len(args) >= 3 else None)
        result: int = originals["sendmsg"](sock, buffers, *args)
        return result

    replacements: dict[str, Callable[..., Any]] = {
        "connect": connect,
        "connect_ex": connect_ex,
        "sendto": sendto,
        "sendmsg": sendmsg,
    }
    for name, function in replacements.items():
        setattr(socket.socket, name, function)
    try:
        yield guard
    finally:
        for name, function in originals.items():
            setattr(socket.socket, name, function)
