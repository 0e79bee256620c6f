"""Random rooms, participants and live policy changes against the real SFU and the real geofence.

The level: real :class:`Sfu` objects (rooms, participants with their RTCPeerConnection, removal) with the
real :class:`GeofenceHost` as admission hook, eject callable and observer, reading a real .mmdb file.
Signaling and media are left out: a WebSocket and ICE per participant would allow a few scenarios, not
hundreds, and the integration tests (test_enforcement.py) cover that edge. Each participant's channel
records what the SFU tells it, which is where refusals and ejections show.

After every step: every refused or ejected participant was restricted by the policy in force at that
moment, no unrestricted participant was refused or ejected, monitor mode acted on nobody, and the SFU's
rooms hold exactly the participants the policies allow.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sfu_geofence.core.policy import Enforcement, Mode, RoomPolicy, UnknownRule
from sfu_geofence.server.enforcement import GeofenceHost
from sfu_geofence.sfu import CloseReason, Refused, Sfu
from sfu_geofence.testing.channel import RecordingChannel
from sfu_geofence.testing.host_contract import CONTRACT_NETWORKS, UNKNOWN_NETWORK, write_contract_database

SCENARIOS = 200
STEPS = 25
SEED = 20261125
ROOMS = ("r0", "r1", "r2")
COUNTRIES: tuple[str | None, ...] = ("US", "DE", "HK", "TW", "CN", None)
LISTED = ("US", "DE", "HK", "TW", "CN", "FR")
IDENTITIES = ("alice", "bob", "carol")
EXEMPT_NETWORKS = ("127.86.0.0/24", "127.85.0.0/16", "127.99.1.0/24")


@dataclass
class Person:
    room: str
    country: str | None
    address: str
    identity: str | None
    channel: RecordingChannel = field(default_factory=RecordingChannel)
    id: str = ""
    hung_up: bool = False


def restricted(policy: RoomPolicy, person: Person) -> bool:
    """The model: exemptions checked here by hand, the country rule by RoomPolicy.restricts."""
    if person.identity is not None and person.identity in policy.exempt_participants:
        return False
    ip = ipaddress.ip_address(person.address)
    if any(ip in ipaddress.ip_network(n) for n in policy.exempt_networks):
        return False
    return policy.restricts(person.country)


def random_policy(rng: random.Random) -> RoomPolicy:
    return RoomPolicy(
        mode=rng.choice(list(Mode)),
        countries=frozenset(rng.sample(LISTED, rng.randint(0, 3))),
        unknown=rng.choice(list(UnknownRule)),
        enforcement=Enforcement.MONITOR if rng.random() < 0.25 else Enforcement.ENFORCE,
        exempt_participants=frozenset(rng.sample(IDENTITIES, rng.choice((0, 0, 1)))),
        exempt_networks=frozenset(rng.sample(EXEMPT_NETWORKS, rng.choice((0, 0, 1)))),
    )


class Scenario:
    def __init__(self, rng: random.Random, database: Path) -> None:
        self.rng = rng
        self.sfu = Sfu()
        self.host = GeofenceHost(self.sfu, database=database)
        self.fence = self.host.geofence
        self.people: list[Person] = []
        self.serial = 0
        self.refused = 0
        self.log: list[str] = []

    def policy(self, room: str) -> RoomPolicy:
        return self.fence.policy(room).policy

    def fresh_address(self, country: str | None) -> str:
        self.serial += 1
        network = ipaddress.ip_network(CONTRACT_NETWORKS[country] if country else UNKNOWN_NETWORK)
        # Half of them in the first /24 (where some exempt networks are), half elsewhere.
        offset = (
            self.serial if self.rng.random() < 0.5 else 256 * self.rng.randint(2, 200) + self.serial % 250
        )
        return str(network.network_address + 1 + offset)

    def live(self) -> list[Person]:
        return [p for p in self.people if p.id and not p.hung_up and not p.channel.ended]

    async def settle(self) -> None:
        # Ejections are scheduled (call_soon); let them run until none is pending.
        for _ in range(100):
            if not any(view.ejecting for view in self.fence.participants()):
                return
            await asyncio.sleep(0)
        raise AssertionError("ejections still pending")

    async def step(self) -> None:
        roll = self.rng.random()
        if roll < 0.5 or not self.live():
            await self.join()
        elif roll < 0.62:
            person = self.rng.choice(self.live())
            self.log.append(f"hang up {person.id}")
            person.hung_up = True
            assert self.sfu.remove_participant(person.id, CloseReason.LEFT, "left")
        elif roll < 0.85:
            room = self.rng.choice(ROOMS)
            policy = None if self.rng.random() < 0.15 else random_policy(self.rng)
            self.log.append(f"{room}: {policy.describe() if policy else 'default'}")
            await self.change(lambda: self.fence.set_policy(room, policy))
        else:
            policy = random_policy(self.rng)
            self.log.append(f"default: {policy.describe()}")
            await self.change(lambda: self.fence.set_default_policy(policy))

    async def join(self) -> None:
        country = self.rng.choice(COUNTRIES)
        person = Person(
            room=self.rng.choice(ROOMS),
            country=country,
            address=self.fresh_address(country),
            identity=self.rng.choice((None, None, *IDENTITIES)),
        )
        policy = self.policy(person.room)
        must_refuse = restricted(policy, person) and not policy.monitor_only
        self.log.append(f"join {person.room} from {country} {person.address} as {person.identity}")
        try:
            participant = self.sfu.join(
                person.room, "x", person.address, person.channel, publish=(), identity=person.identity
            )
        except Refused as exc:
            refused: Refused | None = exc
        else:
            refused = None
            person.id = participant.id
            self.people.append(person)
        if refused is None:
            assert not must_refuse, f"admitted a participant {policy.describe()} restricts"
            return
        self.refused += 1
        assert must_refuse, f"refused an unrestricted participant: {refused.reason}"
        assert refused.by_policy
        assert (country or "unknown location") in refused.reason

    async def change(self, apply: object) -> None:
        before = {p.id: self.policy(p.room) for p in self.live()}
        live = self.live()
        apply()  # type: ignore[operator]
        await self.settle()
        for person in live:
            policy = self.policy(person.room)
            ejected = [detail for reason, detail in person.channel.ended if reason is CloseReason.EJECTED]
            if ejected:
                assert restricted(policy, person), f"ejected {person.id}, unrestricted by {policy.describe()}"
                assert not policy.monitor_only, "monitor mode ejected someone"
                assert (person.country or "unknown location") in ejected[0]
            else:
                should = restricted(policy, person) and not policy.monitor_only
                assert not should, (
                    f"{person.id} stays though {policy.describe()} restricts it (was {before[person.id]})"
                )

    def check_rooms(self) -> None:
        expected = {(p.room, p.id) for p in self.live()}
        served = {(name, pid) for name, room in self.sfu.rooms.items() for pid in room.participants}
        listed = {(v.room, v.participant) for v in self.fence.participants()}
        assert served == expected, served ^ expected
        assert listed == expected, listed ^ expected

    async def close(self) -> None:
        await self.sfu.close()
        self.host.close()


@pytest.mark.slow
async def test_random_rooms_and_live_policy_changes_refuse_and_eject_exactly_the_restricted(
    tmp_path: Path,
) -> None:
    database = write_contract_database(tmp_path / "contract.mmdb")
    rng = random.Random(SEED)
    started = time.monotonic()
    totals = {"refused": 0, "ejected": 0, "joined": 0}
    for number in range(SCENARIOS):
        scenario = Scenario(random.Random(rng.getrandbits(64)), database)
        try:
            for _ in range(STEPS):
                await scenario.step()
                scenario.check_rooms()
        except AssertionError as exc:
            raise AssertionError(f"scenario {number}: {exc}\n" + "\n".join(scenario.log)) from exc
        finally:
            await scenario.close()
        totals["joined"] += len(scenario.people)
        totals["ejected"] += sum(
            1 for p in scenario.people if any(r is CloseReason.EJECTED for r, _ in p.channel.ended)
        )
        totals["refused"] += scenario.refused
    # The scenarios really exercised both paths.
    print(f"\n{SCENARIOS} scenarios in {time.monotonic() - started:.1f} s: {totals}")
    assert totals["refused"] > 100, totals
    assert totals["ejected"] > 100, totals
