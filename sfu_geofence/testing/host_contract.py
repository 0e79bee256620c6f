"""The host's obligations, as a test suite any SFU embedding the geofence runs against itself.

One specification, many hosts (as maxminddb runs one specification against every reader). A host
provides a :class:`HostHarness` through a ``harness`` fixture in a subclass of :class:`HostContract`::

    from sfu_geofence.testing.host_contract import HostContract

    class TestMySfuKeepsTheHostContract(HostContract):
        @pytest.fixture
        async def harness(self, contract_database):
            sfu = await start_my_sfu(database=contract_database)  # a Geofence reading that file
            yield MySfuHarness(sfu)
            await sfu.close()

A harness states the contract version it keeps (``contract_version = sfu_geofence.CONTRACT_VERSION``
once the host does what docs/plugin.md of that version says); the suite fails it on any other.

The suite writes the database (``contract_database``) that puts the loopback ranges of
:data:`CONTRACT_NETWORKS` in countries, so a harness that really connects peers from those
addresses makes them really arrive from those countries. Policies are applied and databases
reloaded through the host's own :class:`~sfu_geofence.Geofence` (``harness.geofence``), which is how
the SFU's operator API reaches it too.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar, Protocol, runtime_checkable

import pytest

from ..core.audit import EventKind
from ..core.contract import CONTRACT_VERSION
from ..core.dbbuild import build_database
from ..core.geofence import Geofence
from ..core.policy import Enforcement, RelayedRule, RoomPolicy
from .wait import eventually

#: Loopback ranges the contract database puts in countries (127.99.0.0/16 stays unknown).
CONTRACT_NETWORKS = {
    "CN": "127.86.0.0/16",
    "HK": "127.85.0.0/16",
    "TW": "127.88.0.0/16",
    "DE": "127.49.0.0/16",
    "US": "127.1.0.0/16",
}
UNKNOWN_NETWORK = "127.99.0.0/16"

#: Generous: hosts run real peers on a loaded machine.
WITHIN = 20.0


@runtime_checkable
class HostHarness(Protocol):
    """What a host offers the suite: join participants from addresses, observe who is still served."""

    @property
    def geofence(self) -> Geofence:
        """The geofence the host embeds, reading ``contract_database``."""
        ...

    contract_version: int
    """The version of docs/plugin.md's contract the host was written against (:data:`CONTRACT_VERSION`)."""

    supports_relay: bool
    """Whether :meth:`join` can make media arrive through a TURN relay (``relayed=True``)."""

    async def join(
        self,
        room: str,
        address: str,
        *,
        identity: str | None = None,
        media_address: str | None = None,
        relayed: bool = False,
        claims_relay: bool = False,
    ) -> str | None:
        """Join one participant into ``room`` with its signaling from ``address``.

        Returns the participant id the host gave to :meth:`Geofence.admit` once the host serves the
        participant, or None when the host refused it. With ``media_address``, the participant's
        media comes from that address (through a relay when ``relayed``), and the call returns after
        the host has reported the selected pair with :meth:`Geofence.media_address`. With
        ``claims_relay``, the participant labels its own candidates ``typ relay`` although its media
        comes straight from ``media_address`` (no TURN server the host declared is involved).
        """
        ...

    async def hang_up(self, room: str, participant: str) -> None:
        """The participant leaves by itself (closes its connection)."""
        ...

    def connected(self, room: str) -> frozenset[str]:
        """Participants of ``room`` the host holds any resource for (session, peer connection,
        transport, ...). A refused participant must never appear here."""
        ...


def check_contract_version(declared: object) -> None:
    """Fail, naming both versions, unless a host declares the contract version this core keeps."""
    assert declared == CONTRACT_VERSION, (
        f"the host keeps host contract version {declared!r}, the geofence core's is {CONTRACT_VERSION}: "
        "read what changed in docs/plugin.md, adapt the host, then declare the new version"
    )


def write_contract_database(path: Path, *, moved: dict[str, str] | None = None) -> Path:
    """Write the contract database at ``path``; ``moved`` maps a country's range to another country."""
    moved = moved or {}
    return build_database(path, [f"{net}={moved.get(cc, cc)}" for cc, net in CONTRACT_NETWORKS.items()])


class HostContract:
    """The specification. Subclass it (name starting with ``Test``) and provide ``harness``."""

    # Only pytest-asyncio is required of a host project (each wait is bounded by WITHIN).
    pytestmark: ClassVar[list[pytest.MarkDecorator]] = [pytest.mark.asyncio]

    # -- fixtures --------------------------------------------------------------------------------

    @pytest.fixture
    def contract_database(self, tmp_path: Path) -> Path:
        """The database every harness must read: CONTRACT_NETWORKS in their countries."""
        return write_contract_database(tmp_path / "contract.mmdb")

    @pytest.fixture
    def contract_database_moved(self, tmp_path: Path) -> Path:
        """The same, except that the DE range has moved to CN (as a database update may say)."""
        return write_contract_database(tmp_path / "contract-moved.mmdb", moved={"DE": "CN"})

    @pytest.fixture
    def harness(self) -> HostHarness:
        raise NotImplementedError("a HostContract subclass provides the `harness` fixture")

    # -- helpers ---------------------------------------------------------------------------------

    _serial: ClassVar[Iterator[int]] = itertools.count(1)

    @classmethod
    def address(cls, country: str | None) -> str:
        """A fresh loopback address the contract database puts in ``country`` (None: unknown)."""
        network = CONTRACT_NETWORKS[country] if country else UNKNOWN_NETWORK
        n = next(cls._serial) % 60000 + 1
        a, b, _, _ = network.split("/")[0].split(".")
        return f"{a}.{b}.{n // 250}.{n % 250 + 1}"

    @staticmethod
    async def joined(harness: HostHarness, room: str, country: str | None, **options: object) -> str:
        participant = await harness.join(room, HostContract.address(country), **options)  # type: ignore[arg-type]
        assert participant is not None, f"a participant from {country} was refused"
        return participant

    @staticmethod
    async def served_exactly(harness: HostHarness, room: str, expected: set[str]) -> None:
        """Wait until the host serves exactly ``expected`` and the geofence lists exactly them."""

        def check() -> str | None:
            served = set(harness.connected(room))
            listed = {p.participant for p in harness.geofence.participants(room)}
            if served != expected:
                return f"host serves {sorted(served)}, expected {sorted(expected)}"
            if listed != expected:
                return f"geofence lists {sorted(listed)} (leave() missing?), expected {sorted(expected)}"
            return None

        await eventually(check, within=WITHIN)

    @staticmethod
    def ejections(harness: HostHarness, room: str, outcome: str) -> list[str]:
        """Participants of ``room`` with an ejection event of ``outcome``, one entry per event."""
        events = harness.geofence.audit.events(room=room, kind=EventKind.EJECTION, outcome=outcome)
        return [str(e.participant) for e in events]

    # -- the specification -------------------------------------------------------------------------

    async def test_the_host_declares_the_contract_version_the_core_keeps(self, harness: HostHarness) -> None:
        check_contract_version(getattr(harness, "contract_version", None))

    async def test_a_restricted_participant_is_refused_at_join_and_nothing_is_allocated(
        self, harness: HostHarness
    ) -> None:
        harness.geofence.set_policy("refuse", RoomPolicy.deny("CN"))
        address = self.address("CN")
        assert await harness.join("refuse", address) is None
        assert harness.connected("refuse") == frozenset()
        assert harness.geofence.participants("refuse") == []
        [event] = harness.geofence.audit.events(room="refuse", kind=EventKind.ADMISSION)
        assert (event.outcome, event.country, event.address) == ("refused", "CN", address)

    async def test_participants_from_other_countries_are_admitted_hk_and_tw_are_not_cn(
        self, harness: HostHarness
    ) -> None:
        harness.geofence.set_policy("admit", RoomPolicy.deny("CN"))
        admitted = {await self.joined(harness, "admit", cc) for cc in ("HK", "TW", "DE", None)}
        await self.served_exactly(harness, "admit", admitted)

    async def test_a_live_policy_change_ejects_only_restricted_participants_exactly_once_then_leave(
        self, harness: HostHarness
    ) -> None:
        room = "live"
        cn = await self.joined(harness, room, "CN")
        others = {await self.joined(harness, room, cc) for cc in ("HK", "DE", "US")}
        harness.geofence.set_policy(room, RoomPolicy.deny("CN"))
        await self.served_exactly(harness, room, others)
        harness.geofence.set_policy(room, RoomPolicy.deny("CN", "IR"))  # a further change: no one else
        await self.served_exactly(harness, room, others)
        assert self.ejections(harness, room, "requested") == [cn]
        assert self.ejections(harness, room, "completed") == [cn]

    async def test_a_change_of_the_server_default_reaches_rooms_without_their_own_policy(
        self, harness: HostHarness
    ) -> None:
        plain = await self.joined(harness, "plain", "CN")
        own = await self.joined(harness, "own", "CN")
        harness.geofence.set_policy("own", RoomPolicy())
        harness.geofence.set_default_policy(RoomPolicy.deny("CN"))
        await self.served_exactly(harness, "plain", set())
        await self.served_exactly(harness, "own", {own})
        assert self.ejections(harness, "plain", "requested") == [plain]

    async def test_monitor_mode_ejects_and_refuses_nobody_but_audits_who_would_be(
        self, harness: HostHarness
    ) -> None:
        room = "monitor"
        cn, de = await self.joined(harness, room, "CN"), await self.joined(harness, room, "DE")
        harness.geofence.set_policy(room, RoomPolicy.deny("CN", enforcement=Enforcement.MONITOR))
        late = await self.joined(harness, room, "CN")
        await self.served_exactly(harness, room, {cn, de, late})
        assert self.ejections(harness, room, "would_eject") == [cn]
        assert self.ejections(harness, room, "requested") == []
        outcomes = [e.outcome for e in harness.geofence.audit.events(room=room, kind=EventKind.ADMISSION)]
        assert outcomes == ["admitted", "admitted", "would_refuse"]

    async def test_exempt_participants_and_networks_stay_when_their_country_is_restricted(
        self, harness: HostHarness
    ) -> None:
        room = "exempt"
        alice = await self.joined(harness, room, "CN", identity="alice")
        bob = await self.joined(harness, room, "CN", identity="bob")
        cn_network = CONTRACT_NETWORKS["CN"]
        harness.geofence.set_policy(room, RoomPolicy.deny("CN", exempt_participants=frozenset({"alice"})))
        await self.served_exactly(harness, room, {alice})
        assert await harness.join(room, self.address("CN"), identity="carol") is None
        harness.geofence.set_policy(room, RoomPolicy.deny("CN", exempt_networks=frozenset({cn_network})))
        carol = await self.joined(harness, room, "CN", identity="carol")
        await self.served_exactly(harness, room, {alice, carol})
        assert self.ejections(harness, room, "requested") == [bob]

    async def test_a_restricted_media_address_ejects_that_participant_only(
        self, harness: HostHarness
    ) -> None:
        room = "media"
        harness.geofence.set_policy(room, RoomPolicy.deny("CN"))
        clean = await self.joined(harness, room, "DE", media_address=self.address("DE"))
        sneaky = await harness.join(room, self.address("DE"), media_address=self.address("CN"))
        await self.served_exactly(harness, room, {clean})
        assert sneaky is not None
        assert self.ejections(harness, room, "requested") == [sneaky]
        [event] = harness.geofence.audit.events(room=room, participant=sneaky, kind=EventKind.MEDIA)
        assert (event.outcome, event.country) == ("refused", "CN")

    async def test_relayed_media_follows_the_rooms_relayed_rule(self, harness: HostHarness) -> None:
        if not harness.supports_relay:
            pytest.skip("this host cannot relay media through TURN in tests")
        room = "relay"
        harness.geofence.set_policy(room, RoomPolicy.deny("CN", relayed=RelayedRule.SIGNALING_COUNTRY))
        kept = await self.joined(harness, room, "DE", media_address=self.address("CN"), relayed=True)
        await self.served_exactly(harness, room, {kept})
        harness.geofence.set_policy(room, RoomPolicy.deny("CN", relayed=RelayedRule.REFUSE))
        await self.served_exactly(harness, room, set())
        assert self.ejections(harness, room, "requested") == [kept]

    async def test_a_self_declared_relay_is_decided_on_its_address(self, harness: HostHarness) -> None:
        # "typ relay" is one word of the client's SDP: only a relay the host declared makes media relayed.
        room = "self-declared-relay"
        harness.geofence.set_policy(room, RoomPolicy.deny("CN", relayed=RelayedRule.ADMIT))
        sneaky = await harness.join(
            room, self.address("DE"), media_address=self.address("CN"), claims_relay=True
        )
        await self.served_exactly(harness, room, set())
        assert sneaky is not None
        assert self.ejections(harness, room, "requested") == [sneaky]
        [event] = harness.geofence.audit.events(room=room, participant=sneaky, kind=EventKind.MEDIA)
        assert (event.outcome, event.country, event.detail) == ("refused", "CN", "direct")

    async def test_a_database_reload_ejects_who_moved_into_a_restricted_country(
        self, harness: HostHarness, contract_database_moved: Path
    ) -> None:
        room = "reload"
        harness.geofence.set_policy(room, RoomPolicy.deny("CN"))
        de, us = await self.joined(harness, room, "DE"), await self.joined(harness, room, "US")
        harness.geofence.reload_database(contract_database_moved)
        await self.served_exactly(harness, room, {us})
        assert self.ejections(harness, room, "requested") == [de]

    async def test_a_participant_that_hangs_up_is_left_and_never_ejected(self, harness: HostHarness) -> None:
        room = "hangup"
        cn, de = await self.joined(harness, room, "CN"), await self.joined(harness, room, "DE")
        await harness.hang_up(room, cn)
        await self.served_exactly(harness, room, {de})
        harness.geofence.set_policy(room, RoomPolicy.deny("CN"))
        await self.served_exactly(harness, room, {de})
        assert self.ejections(harness, room, "requested") == []
