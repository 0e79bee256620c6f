"""The host contract (docs/plugin.md) kept by a second, real SFU: Janus behind the gate.

Every case of :class:`HostContract` runs against Janus through the gate, with real clients whose
signaling comes from the contract database's ranges. Janus never sees a loopback media source here
(it gathers on the LAN dummy only), so media addresses are played by LAN twins of the contract's
loopback addresses (``198.18.86.x`` for ``127.86.x.y``), and relayed media by addresses of a network
the gate declares as its TURN relays (``198.19.86.x``), all placed in the same countries by the gate's
database. One case is adapted, because Janus cannot express it: see :data:`ADAPTED`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from gated import GatedJanus, free_port, gate_config

from sfu_geofence.core.policy import RoomPolicy
from sfu_geofence.testing.ci import skip_or_fail
from sfu_geofence.testing.host_contract import CONTRACT_NETWORKS, HostContract, HostHarness
from sfu_geofence.testing.janus import JANUS_MISSING, find_janus, running_janus
from sfu_geofence.testing.janusgate import (
    LAN_RELAYS,
    JanusGateHarness,
    lan_media_address,
    lan_relay_address,
    lan_twins,
    serving_gate,
)
from sfu_geofence.testing.testdb import build_database

pytestmark = [pytest.mark.janus, pytest.mark.lan]

ADAPTED = {
    "test_exempt_participants_and_networks_stay_when_their_country_is_restricted": (
        "exemption by identity: the gate has no authenticated identity to vouch for, and a name the "
        "client gives itself must never exempt it; exemption by network holds as specified"
    ),
}


@pytest.fixture(scope="module")
def contract_janus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatedJanus]:
    if find_janus() is None:
        skip_or_fail(JANUS_MISSING, kind="janus")
    directory = tmp_path_factory.mktemp("janus-contract")
    port = free_port()
    url = f"http://127.0.0.1:{port}/janus-events"
    with running_janus(directory, events_url=url, string_ids=True) as janus:
        yield GatedJanus(janus, port, directory / "unused.mmdb")


class TestJanusBehindTheGateKeepsTheHostContract(HostContract):
    @pytest.fixture
    async def harness(
        self, contract_database: Path, contract_janus: GatedJanus
    ) -> AsyncIterator[HostHarness]:
        # The contract's networks and their LAN twins (the reload case still reloads the suite's own file).
        twins = build_database(contract_database.with_name("with-twins.mmdb"), lan_twins(CONTRACT_NETWORKS))
        config = gate_config(
            contract_janus, db_path=str(twins), turn_relays=(ipaddress.ip_network(LAN_RELAYS),)
        )
        janus_api = contract_janus.janus.api_url
        async with (
            serving_gate(config) as served,
            JanusGateHarness(
                served, janus_api, media_address=lan_media_address, relay_address=lan_relay_address
            ) as harness,
        ):
            yield harness

    async def test_exempt_participants_and_networks_stay_when_their_country_is_restricted(
        self, harness: HostHarness
    ) -> None:
        # Adapted (ADAPTED): "alice" is only the display name a client chose, which exempts nobody.
        room = "exempt"
        alice = await self.joined(harness, room, "CN", identity="alice")
        harness.geofence.set_policy(room, RoomPolicy.deny("CN", exempt_participants=frozenset({"alice"})))
        await self.served_exactly(harness, room, set())
        cn_network = CONTRACT_NETWORKS["CN"]
        harness.geofence.set_policy(room, RoomPolicy.deny("CN", exempt_networks=frozenset({cn_network})))
        carol = await self.joined(harness, room, "CN", identity="carol")
        await self.served_exactly(harness, room, {carol})
        assert self.ejections(harness, room, "requested") == [alice]


def test_the_host_contract_result_against_janus_is_printed() -> None:
    cases = sorted(name for name in dir(HostContract) if name.startswith("test_"))
    ours = TestJanusBehindTheGateKeepsTheHostContract
    print(f"\nhost contract against Janus behind the gate: {len(cases)} cases")
    for case in cases:
        adapted = getattr(ours, case) is not getattr(HostContract, case)
        print(
            f"  {'adapted' if adapted else 'as is  '}  {case}"
            + (f"\n           ({ADAPTED[case]})" if adapted else "")
        )
        assert adapted == (case in ADAPTED), case
    assert len(cases) - len(ADAPTED) >= 11
