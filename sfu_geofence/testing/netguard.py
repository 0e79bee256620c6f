"""A guard that turns "all traffic stays on loopback" into a failing test instead of a hope.

While installed, every ``connect``/``connect_ex``/``sendto``/``sendmsg`` on an internet socket whose
destination is not a loopback address raises :class:`NonLoopbackDestination` *before* anything is sent,
and is recorded so that a test session can fail even if some library swallowed the exception.

Inside a LAN namespace of the tests' own (:mod:`sfu_geofence.testing.netns`), and there only, the
addresses that namespace holds on its dummy interface are let through as well: they are local to it.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

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
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


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
        if is_loopback(host) or (self.also_allowed is not None and self.also_allowed(host)):
            return
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            line = f"{op} {host}:{address[1] if len(address) > 1 else '?'}"
            self.violations.append(line)
            raise NonLoopbackDestination(f"non-loopback destination refused by the test guard: {line}")


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
