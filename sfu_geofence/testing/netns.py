"""A network namespace that has only ``lo``: where anything that gathers every interface may run.

Chromium gathers every interface address whatever its flags, and a peer that learns one of them as a
peer-reflexive candidate sends media to it. Inside a namespace created by ``unshare --net`` the only
interface is ``lo``, so every non-loopback send fails with "network unreachable" instead of leaving
the machine. The namespace also gets its own PID namespace, so that when its first process ends (or is
killed on a timeout) the kernel ends every process inside it: no browser outlives the run.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Sequence

NAMESPACE_PREFIX: tuple[str, ...] = ("unshare", "--net", "--pid", "--fork", "--kill-child", "--")
"""Creates the namespaces; the command that follows runs as PID 1 of the new PID namespace."""

_BRING_UP_LO = 'ip link set lo up && exec "$@"'


def in_loopback_only_namespace() -> bool:
    """True if ``lo`` is this process's only network interface (``/sys/class/net`` would lie)."""
    return [name for _, name in socket.if_nameindex()] == ["lo"]


def namespace_command(argv: Sequence[str]) -> list[str]:
    """``argv`` wrapped to run in a fresh namespace whose ``lo`` is up (needs root)."""
    return [*NAMESPACE_PREFIX, "sh", "-c", _BRING_UP_LO, "sh", *argv]


def namespace_unavailable(*, timeout: float = 30.0) -> str | None:
    """Why a loopback-only namespace cannot be created here, or None if it can (tries one)."""
    missing = [tool for tool in ("unshare", "ip") if shutil.which(tool) is None]
    if missing:
        return f"{' and '.join(missing)} not found (apt-get install -y util-linux iproute2)"
    try:
        probe = subprocess.run(
            namespace_command(["true"]), capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return f"creating a network namespace took more than {timeout:g} s"
    if probe.returncode != 0:
        detail = (probe.stderr or probe.stdout).strip() or f"exit status {probe.returncode}"
        return f"cannot create a network namespace with only lo (unshare --net needs root): {detail}"
    return None
