"""Which address a participant really connects from when the server sits behind reverse proxies.

The country of a participant is decided from its signaling connection's address, so that address must
be one the participant cannot choose. The left-most ``X-Forwarded-For`` entry is whatever the client
wrote; only entries appended by proxies we run can be believed. The rules, as nginx's
``set_real_ip_from`` + ``real_ip_recursive on``:

* no trusted proxy configured (the default): ``request.remote`` is the TCP peer, and forwarded headers
  change nothing;
* a request whose TCP peer is **not** a trusted proxy: its forwarded headers change nothing (the
  request is served, with ``request.remote`` the peer's address; it is not rejected, so a client
  that talks to the server directly still works and its spoofed header is simply not believed);
* a request from a trusted proxy: ``X-Forwarded-For`` is walked from the right, skipping trusted
  proxies, and the first untrusted entry is the participant (aiohttp-remotes ``XForwardedFiltered``;
  a malformed header from a trusted proxy is answered 400). Entries left of it are ignored, whatever
  they say.

``Forwarded`` (RFC 7239) is never honoured: configure the proxies to send ``X-Forwarded-For``.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from aiohttp_remotes import XForwardedFiltered
from multidict import MultiMapping

from ..core.addresses import parse_address, unmapped, unmapped_network

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class ProxyConfig:
    """Reverse proxies whose forwarded headers are believed (``--trusted-proxy``, repeatable)."""

    trusted: tuple[str, ...] = ()
    """Addresses or networks (CIDR) of the proxies in front of the server; empty: trust nobody."""

    def __post_init__(self) -> None:
        if isinstance(self.trusted, str):
            raise ValueError("trusted proxies are a collection of addresses or networks, not one string")
        object.__setattr__(self, "trusted", tuple(str(net) for net in self.networks))

    @property
    def networks(self) -> tuple[Network, ...]:
        """The trusted proxies, parsed (a single address is a /32 or /128 network; an IPv4-mapped
        one, ``::ffff:10.0.0.5``, the IPv4 network it is: peers and entries are compared unmapped)."""
        networks = []
        for text in self.trusted:
            try:
                networks.append(unmapped_network(ipaddress.ip_network(text, strict=False)))
            except ValueError:
                raise ValueError(
                    f"trusted proxy {text!r} is not an IP address or network (e.g. 10.0.0.5 or 10.0.0.0/24)"
                ) from None
        return tuple(networks)


def install_trusted_proxies(app: web.Application, config: ProxyConfig) -> None:
    """Make ``request.remote`` the participant's address in ``app`` (and its sub-applications).

    Call before the application starts. With no trusted proxy nothing is installed: ``request.remote``
    is the TCP peer.
    """
    if config.trusted:
        app.middlewares.append(trusted_proxy_middleware(config))


def trusted_proxy_middleware(config: ProxyConfig) -> Middleware:
    """The middleware :func:`install_trusted_proxies` installs."""
    networks = config.networks
    # Walks X-Forwarded-For from the right past the trusted entries; it does not look at the TCP
    # peer itself, which is why it only ever sees requests from a trusted peer.
    forwarded = _UnmappedXForwardedFiltered(set(networks))

    @web.middleware
    async def trusted_proxies(request: web.Request, handler: Handler) -> web.StreamResponse:
        peer = _peer(request)
        if peer is None or not any(peer in network for network in networks):
            return await handler(request)
        return await forwarded.middleware(request, handler)

    return trusted_proxies


class _UnmappedXForwardedFiltered(XForwardedFiltered):
    """``XForwardedFiltered`` reading ``::ffff:a.b.c.d`` entries as the IPv4 addresses they are.

    A proxy on a dual-stack socket writes its IPv4 peers that way: read as IPv6, a trusted 10.0.0.5
    written ``::ffff:10.0.0.5`` was not recognised, and the proxy itself became "the participant".
    """

    def get_forwarded_for(self, headers: MultiMapping[str]) -> list[IPv4Address | IPv6Address]:
        return [unmapped(address) for address in super().get_forwarded_for(headers)]


def participant_address(request: web.Request) -> str:
    """The address the geofence decides on: the TCP peer, or what a trusted proxy says it forwarded."""
    remote = request.remote
    if remote is None:  # not a TCP connection (a Unix socket): nothing to decide a country on
        raise web.HTTPBadRequest(reason="the connection has no IP address")
    return remote


def _peer(request: web.Request) -> IPv4Address | IPv6Address | None:
    peername = request.transport.get_extra_info("peername") if request.transport else None
    if not isinstance(peername, tuple):
        return None
    return parse_address(peername[0])
