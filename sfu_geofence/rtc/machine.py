"""This machine's own addresses as an ICE policy: what ``sfu-geofence demo`` gathers on and accepts.

Browsers leave loopback out of WebRTC unless told otherwise (a flag nobody has set), so a demo that
talks to 127.0.0.1 only gives a stock browser on the same machine no meeting. Its ICE therefore binds
loopback *and* every non-loopback, non-link-local address of this machine, and accepts media (remote
candidates, STUN checks, hence peer-reflexive candidates) from exactly those addresses plus loopback:
a browser on this machine connects, another machine never does. ``serve`` does not use this: a LAN
deployment chooses its addresses with ``--ice-address`` and ``--allow-remote`` (docs/operations.md).
"""

from __future__ import annotations

import ipaddress

from aioice.ice import get_host_addresses

from .ice import LOOPBACK_NETWORKS, IcePolicy


def machine_addresses() -> tuple[str, ...]:
    """This machine's interface addresses (in this network namespace) but loopback and link-local."""
    found = []
    for text in get_host_addresses(use_ipv4=True, use_ipv6=True):
        address = ipaddress.ip_address(text)
        if not (address.is_loopback or address.is_link_local or text in found):
            found.append(text)
    return tuple(found)


def machine_ice_policy(loopback: str = "127.0.0.1") -> IcePolicy:
    """Gather on ``loopback`` and this machine's addresses; accept media from them (and loopback) only."""
    addresses = machine_addresses()
    return IcePolicy(
        bind=(loopback, *addresses),
        allowed_remote=(*LOOPBACK_NETWORKS, *(ipaddress.ip_network(a) for a in addresses)),
    )
