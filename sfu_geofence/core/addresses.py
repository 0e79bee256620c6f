"""IP address normalisation: the one place that says which address a text or socket names.

A dual-stack socket reports IPv4 peers as ``::ffff:a.b.c.d`` and a link-local IPv6 peer with a zone
id (``fe80::1%eth0``); the geofence, the ICE policy, the proxy trust list, the caps and the loopback
guard must all read those as the same address, so they all read them here.
"""

from __future__ import annotations

import ipaddress

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def unmapped(address: IPAddress) -> IPAddress:
    """``address``, or the IPv4 address it is when written IPv4-mapped (``::ffff:a.b.c.d``)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def parse_address(text: str) -> IPAddress:
    """The address ``text`` names: a zone id (``%eth0``) dropped, ``::ffff:a.b.c.d`` as IPv4.

    Raises ValueError for text that is not an IP literal (a host name, garbage).
    """
    return unmapped(ipaddress.ip_address(text.split("%", 1)[0]))


def unmapped_network(network: IPNetwork) -> IPNetwork:
    """``network``, or the IPv4 network it is when written IPv4-mapped (``::ffff:10.0.0.0/104``).

    Addresses are compared after :func:`parse_address` turns ``::ffff:a.b.c.d`` into ``a.b.c.d``,
    so a network an operator wrote IPv4-mapped would otherwise never match anything. Only networks
    inside ``::ffff:0:0/96`` are turned; a wider IPv6 network (``::/0``) matches IPv6 addresses only.
    """
    if (
        isinstance(network, ipaddress.IPv6Network)
        and network.prefixlen >= 96
        and network.network_address.ipv4_mapped is not None
    ):
        return ipaddress.IPv4Network((network.network_address.ipv4_mapped, network.prefixlen - 96))
    return network
