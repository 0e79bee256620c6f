"""The host-contract suite can fail: hosts that break a promise are caught by it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from sfu_geofence import EjectRequest
from sfu_geofence.testing import host_contract
from sfu_geofence.testing.host_contract import HostContract, HostHarness, write_contract_database
from sfu_geofence.testing.reference_host import ReferenceHost, Session


class EjectsTheWholeRoom(ReferenceHost):
    def _eject(self, request: EjectRequest) -> None:
        for participant in list(self._rooms.get(request.room, {})):
            self._close(request.room, participant, "collateral")


class ForgetsToCallLeave(ReferenceHost):
    def _close(self, room: str, participant: str, reason: str | None = None) -> None:
        self._rooms.get(room, {}).pop(participant, None)


class AllocatesBeforeAsking(ReferenceHost):
    async def join(self, room: str, address: str, **options: object) -> str | None:
        self._rooms.setdefault(room, {})["early"] = Session(room, "early", address)
        return await super().join(room, address, **options)  # type: ignore[arg-type]


class IgnoresMediaAddresses(ReferenceHost):
    async def join(self, room: str, address: str, **options: object) -> str | None:
        options.pop("media_address", None)
        return await super().join(room, address, **options)  # type: ignore[arg-type]


class TrustsTheRelayLabel(ReferenceHost):
    """Takes a client's ``typ relay`` for a relay (what this project's SFU did before issue 9)."""

    async def join(self, room: str, address: str, **options: object) -> str | None:
        options["relayed"] = bool(options.get("relayed")) or bool(options.get("claims_relay"))
        return await super().join(room, address, **options)  # type: ignore[arg-type]


Test = Callable[[HostContract, HostHarness], Awaitable[None]]


@pytest.fixture
def contract(monkeypatch: pytest.MonkeyPatch) -> HostContract:
    monkeypatch.setattr(host_contract, "WITHIN", 0.5)  # a broken host will not get better
    return HostContract()


@pytest.fixture
def database(tmp_path: Path) -> Path:
    return write_contract_database(tmp_path / "contract.mmdb")


@pytest.mark.parametrize(
    ("host_class", "test"),
    [
        (
            EjectsTheWholeRoom,
            HostContract.test_a_live_policy_change_ejects_only_restricted_participants_exactly_once_then_leave,
        ),
        (
            ForgetsToCallLeave,
            HostContract.test_a_live_policy_change_ejects_only_restricted_participants_exactly_once_then_leave,
        ),
        (
            AllocatesBeforeAsking,
            HostContract.test_a_restricted_participant_is_refused_at_join_and_nothing_is_allocated,
        ),
        (IgnoresMediaAddresses, HostContract.test_a_restricted_media_address_ejects_that_participant_only),
        (TrustsTheRelayLabel, HostContract.test_a_self_declared_relay_is_decided_on_its_address),
    ],
)
async def test_the_suite_fails_a_host_that_breaks_the_contract(
    contract: HostContract, database: Path, host_class: type[ReferenceHost], test: Test
) -> None:
    host = host_class(database)
    with pytest.raises(AssertionError):
        await test(contract, host)
    await host.close()
