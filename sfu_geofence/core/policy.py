"""A room's policy: which countries are restricted, and what to do when the country is not known.

A policy is a frozen value; changing a room's policy means storing a new value (see
:mod:`.policystore`), which bumps the version that every later decision records.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from .addresses import unmapped_network
from .countries import country_code
from .errors import InvalidCountryCode, InvalidPolicy


class Mode(StrEnum):
    DENY = "deny"
    """The listed countries are restricted; every other country is not."""
    ALLOW = "allow"
    """Only the listed countries are admitted; every other country is restricted."""


class UnknownRule(StrEnum):
    """What to do with an address the database does not place in any country."""

    ADMIT = "admit"
    REFUSE = "refuse"


class Enforcement(StrEnum):
    ENFORCE = "enforce"
    """Refuse and eject restricted participants."""
    MONITOR = "monitor"
    """Report only: audit who *would* be refused or ejected and act on nobody."""


class RelayedRule(StrEnum):
    """What a media address relayed through TURN means: the relay's country says nothing of the
    participant's."""

    ADMIT = "admit"
    """Relayed media is fine; the signaling decision stands."""
    REFUSE = "refuse"
    """Relayed media is not accepted in this room: eject."""
    SIGNALING_COUNTRY = "use-signaling-country"
    """Judge the participant by the country its signaling connection came from (the default)."""


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _network(text: str) -> Network:
    try:
        # Addresses are decided unmapped (::ffff:a.b.c.d as a.b.c.d): so are exempt networks.
        return unmapped_network(ipaddress.ip_network(text, strict=False))
    except (ValueError, TypeError):
        raise InvalidPolicy(f"exempt network {text!r} is not an IP network (e.g. 198.51.100.0/24)") from None


@dataclass(frozen=True, slots=True)
class RoomPolicy:
    """Who may be in a room, by country. The default policy restricts nobody."""

    mode: Mode = Mode.DENY
    countries: frozenset[str] = frozenset()
    """ISO 3166-1 alpha-2 codes (validated, upper case) the mode applies to."""
    unknown: UnknownRule = UnknownRule.ADMIT
    enforcement: Enforcement = Enforcement.ENFORCE
    exempt_participants: frozenset[str] = frozenset()
    """Participant identities (as the host vouches for them, e.g. from its token) never restricted."""
    exempt_networks: frozenset[str] = frozenset()
    """Networks (CIDR text, normalised) whose addresses are never restricted."""
    relayed: RelayedRule = RelayedRule.SIGNALING_COUNTRY
    _parsed_networks: tuple[Network, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            mode, unknown = Mode(self.mode), UnknownRule(self.unknown)
            enforcement, relayed = Enforcement(self.enforcement), RelayedRule(self.relayed)
        except ValueError as exc:
            raise InvalidPolicy(str(exc)) from None
        if isinstance(self.countries, str) or isinstance(self.exempt_participants, str):
            raise InvalidPolicy("countries and exempt_participants are collections, not one string")
        try:
            countries = frozenset(country_code(code) for code in self.countries)
        except InvalidCountryCode as exc:
            raise InvalidPolicy(str(exc)) from None
        networks = tuple(sorted({_network(text) for text in self.exempt_networks}, key=str))
        identities = frozenset(self.exempt_participants)
        if not all(isinstance(identity, str) and identity for identity in identities):
            raise InvalidPolicy("exempt participant identities must be non-empty strings")
        for name, value in (
            ("mode", mode),
            ("unknown", unknown),
            ("enforcement", enforcement),
            ("relayed", relayed),
            ("countries", countries),
            ("exempt_participants", identities),
            ("exempt_networks", frozenset(str(net) for net in networks)),
            ("_parsed_networks", networks),
        ):
            object.__setattr__(self, name, value)

    @classmethod
    def deny(cls, *countries: str, **options: Any) -> RoomPolicy:
        """Restrict exactly ``countries``."""
        return cls(mode=Mode.DENY, countries=frozenset(countries), **options)

    @classmethod
    def allow(cls, *countries: str, **options: Any) -> RoomPolicy:
        """Restrict every country but ``countries``."""
        return cls(mode=Mode.ALLOW, countries=frozenset(countries), **options)

    @property
    def monitor_only(self) -> bool:
        return self.enforcement is Enforcement.MONITOR

    @property
    def networks(self) -> tuple[Network, ...]:
        """The exempt networks, parsed."""
        return self._parsed_networks

    def restricts(self, country: str | None) -> bool:
        """Whether a participant located in ``country`` (None: unknown) is restricted, exemptions aside.

        The one statement of what the policy means; every cached decision is derived from it.
        """
        if country is None:
            return self.unknown is UnknownRule.REFUSE
        if self.mode is Mode.DENY:
            return country in self.countries
        return country not in self.countries

    def exempts(self, identity: str | None, address: str | None) -> bool:
        """Whether an identity or an (already normalised) address is exempt from this policy."""
        if identity is not None and identity in self.exempt_participants:
            return True
        if address is not None and self._parsed_networks:
            ip = ipaddress.ip_address(address)
            return any(ip in network for network in self._parsed_networks)
        return False

    def describe(self) -> str:
        """The rule as operators read it in decisions and the audit log."""
        parts = [
            f"{self.mode} {','.join(sorted(self.countries)) or '(none)'}",
            f"unknown {self.unknown}",
            f"relayed {self.relayed}",
            str(self.enforcement),
        ]
        if self.exempt_participants or self.exempt_networks:
            parts.append(
                f"exempt {len(self.exempt_participants)} participant(s), "
                f"{','.join(sorted(self.exempt_networks)) or 'no networks'}"
            )
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, the one stored by the policy store and spoken by operator APIs."""
        return {
            "mode": str(self.mode),
            "countries": sorted(self.countries),
            "unknown": str(self.unknown),
            "enforcement": str(self.enforcement),
            "exempt_participants": sorted(self.exempt_participants),
            "exempt_networks": sorted(self.exempt_networks),
            "relayed": str(self.relayed),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RoomPolicy:
        """Parse :meth:`to_dict`'s form; unknown keys and wrong types raise InvalidPolicy."""
        if not isinstance(data, Mapping):
            raise InvalidPolicy(f"a policy is an object, not {type(data).__name__}")
        allowed = {
            "mode",
            "countries",
            "unknown",
            "enforcement",
            "exempt_participants",
            "exempt_networks",
            "relayed",
        }
        extra = set(data) - allowed
        if extra:
            raise InvalidPolicy(f"unknown policy field(s): {', '.join(sorted(extra))}")
        options: dict[str, Any] = {}
        for key in ("mode", "unknown", "enforcement", "relayed"):
            if key in data:
                if not isinstance(data[key], str):
                    raise InvalidPolicy(f"policy field {key!r} must be a string")
                options[key] = data[key]
        for key in ("countries", "exempt_participants", "exempt_networks"):
            if key in data:
                options[key] = frozenset(_strings(key, data[key]))
        return cls(**options)


def _strings(key: str, value: Any) -> Iterable[str]:
    if isinstance(value, str) or not isinstance(value, list | tuple | set | frozenset):
        raise InvalidPolicy(f"policy field {key!r} must be a list of strings")
    if not all(isinstance(item, str) for item in value):
        raise InvalidPolicy(f"policy field {key!r} must be a list of strings")
    return value
