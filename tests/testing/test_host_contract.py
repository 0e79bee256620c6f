"""The host-contract suite, run against the reference host (the real SFU runs it too)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sfu_geofence import CONTRACT_VERSION
from sfu_geofence.testing.host_contract import HostContract, HostHarness, check_contract_version
from sfu_geofence.testing.reference_host import ReferenceHost


class TestTheReferenceHostKeepsTheHostContract(HostContract):
    @pytest.fixture
    async def harness(self, contract_database: Path) -> AsyncIterator[HostHarness]:
        host = ReferenceHost(contract_database)
        yield host
        await host.close()


async def test_the_reference_host_closes_only_the_ejected_participant_with_the_trigger(
    tmp_path: Path,
) -> None:
    from sfu_geofence import RoomPolicy
    from sfu_geofence.testing.testdb import build_database

    host = ReferenceHost(build_database(tmp_path / "t.mmdb", ["127.86.0.0/16=CN", "127.49.0.0/16=DE"]))
    cn = await host.join("r", "127.86.0.1")
    de = await host.join("r", "127.49.0.1")
    host.geofence.set_policy("r", RoomPolicy.deny("CN"))
    from sfu_geofence.testing.wait import eventually

    await eventually(lambda: None if host.closed else "nothing closed yet", within=10)
    assert host.closed == [("r", cn, "policy_changed")]
    assert host.connected("r") == frozenset({de})
    await host.close()


def test_a_host_declaring_another_contract_version_fails_naming_both() -> None:
    check_contract_version(CONTRACT_VERSION)
    with pytest.raises(AssertionError, match=f"version 0, the geofence core's is {CONTRACT_VERSION}"):
        check_contract_version(0)
    with pytest.raises(AssertionError, match="version None"):
        check_contract_version(None)  # a harness that declares none


def test_docs_plugin_md_states_the_contract_version_the_core_keeps() -> None:
    text = (Path(__file__).parents[2] / "docs" / "plugin.md").read_text()
    assert f"**Contract version: {CONTRACT_VERSION}** (`sfu_geofence.CONTRACT_VERSION`)" in text
