"""Network namespaces of the tests' own: where anything that gathers every interface may run.

Chromium gathers every interface address whatever its flags, and a peer that learns one of them as a
peer-reflexive candidate sends media to it. Inside a namespace created by ``unshare --net`` the only
interface is ``lo``, so every non-loopback send fails with "network unreachable" instead of leaving
the machine. The namespace also gets its own PID namespace, so that when its first process ends (or is
killed on a timeout) the kernel ends every process inside it: no browser outlives the run.

A *LAN namespace* adds one ``dummy`` interface :data:`LAN_INTERFACE` (or an ``ifb``,
:data:`LAN_KINDS`) holding :data:`LAN_IPV4` (benchmarking range 198.18.0.0/15) and :data:`LAN_IPV6`
(documentation range 2001:db8::/32): it stands in for the machine's network card, so a browser
started without any loopback flag has an address to gather, and IPv6 has an address besides ::1. A
dummy interface discards whatever is sent out through it (it is also the default route, as a LAN's
card would be); only the namespace's own addresses answer.
"""

from __future__ import annotations

import enum
import functools
import ipaddress
import json
import shutil
import socket
import subprocess
from collections.abc import Sequence

NAMESPACE_PREFIX: tuple[str, ...] = ("unshare", "--net", "--pid", "--fork", "--kill-child", "--")
"""Creates the namespaces; the command that follows runs as PID 1 of the new PID namespace."""

LAN_INTERFACE = "sfugf-lan"
"""The dummy interface of a LAN namespace."""
LAN_IPV4 = "198.18.0.1"
LAN_IPV6 = "2001:db8::1"
LAN_NETWORKS: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = (
    ipaddress.IPv4Network("198.18.0.0/15"),
    ipaddress.IPv6Network("2001:db8::/32"),
)
"""The only ranges a LAN namespace's addresses come from (test-only ranges, RFC 2544 and 3849)."""


LAN_KINDS = ("dummy", "ifb")
"""A ``dummy`` interface where the kernel has the module; else an ``ifb``, which likewise drops what is
sent out through it (seen on kernels built without ``dummy``)."""


class Namespace(enum.Enum):
    """The two kinds of namespace tests run in."""

    LOOPBACK = "only lo"
    LAN = f"lo and a dummy {LAN_INTERFACE} ({LAN_IPV4}/24, {LAN_IPV6}/64)"


_BRING_UP = {
    Namespace.LOOPBACK: 'ip link set lo up && exec "$@"',
    Namespace.LAN: (
        f"ip link set lo up && {{ ip link add {LAN_INTERFACE} type dummy 2>/dev/null"
        f" || ip link add {LAN_INTERFACE} type ifb; }}"
        f" && ip addr add {LAN_IPV4}/24 dev {LAN_INTERFACE}"
        f" && ip addr add {LAN_IPV6}/64 dev {LAN_INTERFACE} nodad"
        f" && ip link set {LAN_INTERFACE} up"
        # A LAN has a default route; without one a browser that hides its addresses (mDNS) finds no
        # "default" address to offer. Through the dummy, anything not local to the namespace is dropped.
        f" && ip route add default dev {LAN_INTERFACE} && ip -6 route add default dev {LAN_INTERFACE}"
        ' && exec "$@"'
    ),
}


def in_loopback_only_namespace() -> bool:
    """True if ``lo`` is this process's only network interface (``/sys/class/net`` would lie)."""
    return [name for _, name in socket.if_nameindex()] == ["lo"]


@functools.cache
def in_lan_namespace() -> bool:
    """True if this process's interfaces are ``lo`` and the dummy :data:`LAN_INTERFACE`, nothing else."""
    if sorted(name for _, name in socket.if_nameindex()) != sorted(["lo", LAN_INTERFACE]):
        return False
    shown = subprocess.run(
        ["ip", "-json", "-details", "link", "show", "dev", LAN_INTERFACE],
        capture_output=True,
        text=True,
        check=False,
    )
    if shown.returncode != 0:
        return False
    [link] = json.loads(shown.stdout)
    return link.get("linkinfo", {}).get("info_kind") in LAN_KINDS


def current_namespace() -> Namespace | None:
    """The kind of test namespace this process runs in, or None (e.g. the machine's own)."""
    if in_loopback_only_namespace():
        return Namespace.LOOPBACK
    return Namespace.LAN if in_lan_namespace() else None


@functools.lru_cache(maxsize=1024)
def is_own_lan_address(host: str) -> bool:
    """True, inside a LAN namespace only, for an address of :data:`LAN_NETWORKS` this namespace holds.

    Such a destination never leaves the namespace (it is local), so the loopback guard may let it
    through there. Held means bindable: binding a socket sends nothing. Cached (the guard asks per
    packet); :func:`add_lan_address` clears the cache.
    """
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if not any(address in network for network in LAN_NETWORKS) or not in_lan_namespace():
        return False
    family = socket.AF_INET if address.version == 4 else socket.AF_INET6
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((str(address), 0))
        except OSError:
            return False
    return True


def add_lan_address(address: str) -> None:
    """Give the namespace's dummy interface one more address of :data:`LAN_NETWORKS` (LAN namespace only)."""
    parsed = ipaddress.ip_address(address)
    if not in_lan_namespace() or not any(parsed in network for network in LAN_NETWORKS):
        raise RuntimeError(f"{address} can be added only to a LAN namespace's dummy, from {LAN_NETWORKS}")
    prefix = 32 if parsed.version == 4 else 128
    subprocess.run(
        [
            "ip",
            "addr",
            "replace",
            f"{parsed}/{prefix}",
            "dev",
            LAN_INTERFACE,
            *(["nodad"] * (parsed.version == 6)),
        ],
        check=True,
        capture_output=True,
    )
    is_own_lan_address.cache_clear()  # it may have answered False for this address before


def namespace_command(argv: Sequence[str], namespace: Namespace = Namespace.LOOPBACK) -> list[str]:
    """``argv`` wrapped to run in a fresh namespace of that kind, ``lo`` up (needs root)."""
    return [*NAMESPACE_PREFIX, "sh", "-c", _BRING_UP[namespace], "sh", *argv]


def namespace_unavailable(namespace: Namespace = Namespace.LOOPBACK, *, timeout: float = 30.0) -> str | None:
    """Why a namespace of that kind cannot be created here, or None if it can (tries one)."""
    missing = [tool for tool in ("unshare", "ip") if shutil.which(tool) is None]
    if missing:
        return f"{' and '.join(missing)} not found (apt-get install -y util-linux iproute2)"
    try:
        probe = subprocess.run(
            namespace_command(["true"], namespace),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"creating a network namespace took more than {timeout:g} s"
    if probe.returncode != 0:
        detail = (probe.stderr or probe.stdout).strip() or f"exit status {probe.returncode}"
        return (
            f"cannot create a network namespace with {namespace.value} (unshare --net needs root): {detail}"
        )
    return None
