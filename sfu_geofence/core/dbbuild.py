"""Build real ``.mmdb`` files that put chosen networks (loopback ranges above all) in chosen countries.

Synthetic peers bound to 127.86.x.y then really arrive "from" CN: both their signaling connection and
their media carry that source address, and the geofence reads this file with maxminddb like any other.

Two record shapes: DB-IP style (``{"country_code": "CN"}``) and GeoIP2-Country style (``country`` and
``registered_country`` with ``iso_code`` and ``names``; ``registered:CC`` leaves ``country`` out, as
GeoIP2 does for anonymous proxies).
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import netaddr
from mmdb_writer import MMDBWriter

from .countries import country_code, country_name

Shape = Literal["dbip", "geoip2-country"]
SHAPES: tuple[Shape, ...] = ("dbip", "geoip2-country")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_V4_IN_V6 = ipaddress.IPv6Network("::/96")


@dataclass(frozen=True, slots=True)
class Assignment:
    """One ``NETWORK=CC`` line: put ``network`` in ``country``."""

    network: Network
    country: str
    registered_only: bool = False
    """GeoIP2 shape only: give ``registered_country`` and no ``country``."""

    @classmethod
    def parse(cls, text: str) -> Assignment:
        """``127.86.0.0/16=CN``, or ``127.50.0.0/16=registered:DE`` for a registered-country-only record."""
        network_text, sep, country_text = text.partition("=")
        if not sep:
            raise ValueError(f"{text!r}: expected NETWORK=CC, e.g. 127.86.0.0/16=CN")
        registered_only = country_text.startswith("registered:")
        if registered_only:
            country_text = country_text.removeprefix("registered:")
        try:
            network = ipaddress.ip_network(network_text.strip(), strict=False)
        except ValueError:
            raise ValueError(f"{text!r}: {network_text!r} is not an IP network") from None
        return cls(network, country_code(country_text), registered_only)


class _Writer(MMDBWriter):
    """MMDBWriter with a chosen build time (it always writes "now"), to test staleness."""

    def __init__(self, build_epoch: int, **options: Any) -> None:
        super().__init__(**options)
        self.build_epoch = build_epoch

    def _build_meta(self) -> dict[str, Any]:
        meta: dict[str, Any] = super()._build_meta()
        meta["build_epoch"] = self.build_epoch
        return meta


def _record(assignment: Assignment, shape: Shape) -> dict[str, Any]:
    code = assignment.country
    if shape == "dbip":
        if assignment.registered_only:
            raise ValueError("registered:CC needs the geoip2-country shape (DB-IP records have one field)")
        return {"country_code": code}
    country = {"iso_code": code, "names": {"en": country_name(code)}}
    if assignment.registered_only:
        return {"registered_country": country}
    return {"country": country, "registered_country": country}


def _check_collisions(assignments: list[Assignment]) -> None:
    # IPv4 lives at ::/96 in an IPv6 tree: ::1 is 0.0.0.1 there, and one would overwrite the other.
    v4 = [a.network for a in assignments if a.network.version == 4]
    for a in assignments:
        net = a.network
        if isinstance(net, ipaddress.IPv6Network) and net.overlaps(_V4_IN_V6):
            first = ipaddress.IPv4Address(int(net.network_address) & 0xFFFFFFFF)
            alias = ipaddress.IPv4Network(f"{first}/{max(net.prefixlen - 96, 0)}", strict=False)
            clash = [str(n) for n in v4 if n.overlaps(alias)]
            if clash:
                raise ValueError(
                    f"{net} and {', '.join(clash)} share the same place in an IPv6 tree "
                    "(IPv4 addresses live at ::/96); map only one of them"
                )


def build_database(
    path: str | Path,
    assignments: Iterable[Assignment | str],
    *,
    shape: Shape = "dbip",
    built: datetime | None = None,
    ip_version: Literal[4, 6] = 6,
    description: str = "sfu-geofence test database",
) -> Path:
    """Write a ``.mmdb`` file at ``path`` in which each assignment's network is in its country.

    Larger networks are inserted before the smaller ones inside them, so ``127.0.0.0/8=US`` with
    ``127.86.0.0/16=CN`` puts 127.86/16 in CN and the rest of 127/8 in US, in any order given.
    """
    if shape not in SHAPES:
        raise ValueError(f"shape must be one of {', '.join(SHAPES)}, not {shape!r}")
    parsed = [a if isinstance(a, Assignment) else Assignment.parse(a) for a in assignments]
    if ip_version == 4 and any(a.network.version == 6 for a in parsed):
        raise ValueError("an IPv4-only database cannot hold IPv6 networks")
    if ip_version == 6:
        _check_collisions(parsed)
    writer = _Writer(
        build_epoch=int(built.timestamp() if built else time.time()),
        ip_version=ip_version,
        ipv4_compatible=ip_version == 6,
        database_type="DBIP-Country-Lite" if shape == "dbip" else "GeoIP2-Country",
        languages=["en"],
        description={"en": description},
    )
    for assignment in sorted(
        parsed, key=lambda a: a.network.prefixlen + (96 if a.network.version == 4 else 0)
    ):
        writer.insert_network(netaddr.IPSet([str(assignment.network)]), _record(assignment, shape))
    path = Path(path)
    writer.to_db_file(str(path))
    return path
