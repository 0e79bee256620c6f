"""A load scenario: who joins from where, what happens when, and who must be refused or ejected.

The command line says ``--countries US:6,CN:3 --rooms 2 --at 10s:deny:CN``; this module turns that
into a :class:`Plan`: every participant (name, country, room, loopback address in its country's
network), every step with its resolved targets, and the expected outcome of each participant, derived
from :meth:`RoomPolicy.restricts` exactly as the geofence decides. The runner compares what happened
with :attr:`Plan.expected`; nothing here touches the network.

Step grammar (``--at``, repeatable), ``TIME:ACTION``, times in seconds from the scenario's start
(``10s``, ``2.5s``, ``500ms``, ``10``)::

    deny:CC[,CC...][@ROOM[,ROOM...]]    restrict exactly these countries (other policy fields kept)
    allow:CC[,CC...][@ROOM[,ROOM...]]   admit only these countries
    open[@ROOMS]                        restrict nobody
    monitor[@ROOMS]                     keep the policy, report only (nobody refused or ejected)
    enforce[@ROOMS]                     keep the policy, enforce it again
    kill:PEER | kill:CC                 SIGKILL a participant (by name, e.g. cn-2, or the last-placed
                                        participant of country CC still expected in a room)
    add:CC:N[@ROOM]                     N more participants from CC (rooms round robin unless @ROOM)

Without ``@`` a policy step applies to every room. Participants are named ``<cc>-<n>`` (``us-1``),
rooms ``room-1`` .. ``room-R``; participants are spread over the rooms round robin in the order given.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from ..core.countries import country_code
from ..core.errors import InvalidCountryCode
from ..core.policy import Enforcement, Mode, RoomPolicy

PolicyAction = Literal["deny", "allow", "open", "monitor", "enforce"]
POLICY_ACTIONS: tuple[PolicyAction, ...] = ("deny", "allow", "open", "monitor", "enforce")
ACTIONS = (*POLICY_ACTIONS, "kill", "add")

Outcome = Literal["stays", "refused", "ejected", "killed"]
"""What becomes of a participant: stays to the end, refused at join, ejected by a step, or killed."""

FIRST_DEFAULT_NETWORK = 10
"""Country i (in order of appearance) gets 127.(10+i).0.0/16 unless ``--network`` says otherwise."""
MAX_PEERS_PER_COUNTRY = 60_000

_TIME = re.compile(r"^(\d+(?:\.\d+)?)(ms|s)?$")
_PEER_NAME = re.compile(r"^[a-z]{2}-\d+$")


class ScenarioError(ValueError):
    """A malformed or impossible scenario: the message names the argument and what is wrong."""


@dataclass(frozen=True)
class CountryCount:
    country: str
    count: int


@dataclass(frozen=True)
class PolicyStep:
    at: float
    action: PolicyAction
    countries: tuple[str, ...] = ()
    rooms: tuple[str, ...] | None = None
    """None: every room."""
    text: str = ""

    def apply(self, current: RoomPolicy) -> RoomPolicy:
        """The policy a room has after this step (fields the step does not name are kept)."""
        if self.action == "deny":
            return dataclasses.replace(current, mode=Mode.DENY, countries=frozenset(self.countries))
        if self.action == "allow":
            return dataclasses.replace(current, mode=Mode.ALLOW, countries=frozenset(self.countries))
        if self.action == "open":
            return dataclasses.replace(current, mode=Mode.DENY, countries=frozenset())
        if self.action == "monitor":
            return dataclasses.replace(current, enforcement=Enforcement.MONITOR)
        return dataclasses.replace(current, enforcement=Enforcement.ENFORCE)


@dataclass(frozen=True)
class KillStep:
    at: float
    target: str
    """A participant's name (``cn-2``) or a country code (``CN``)."""
    text: str = ""


@dataclass(frozen=True)
class AddStep:
    at: float
    country: str
    count: int
    room: str | None = None
    text: str = ""


Step = PolicyStep | KillStep | AddStep


@dataclass(frozen=True)
class PeerSpec:
    """One synthetic participant."""

    name: str
    country: str
    room: str
    address: str
    """Its own loopback address, for the WebSocket and for ICE."""
    step: int | None = None
    """Index of the ``add`` step that brings it, None for the participants present from the start."""


@dataclass(frozen=True)
class Expectation:
    outcome: Outcome
    step: int | None = None
    """The step that refuses, ejects or kills it (None: refused at the start, or stays)."""


@dataclass(frozen=True)
class PlannedStep:
    index: int
    step: Step
    policies: dict[str, RoomPolicy] = field(default_factory=dict)
    """Policy steps: the policy each affected room gets."""
    peers: tuple[str, ...] = ()
    """Kill: the participant killed. Add: the participants added."""
    expected_removed: tuple[str, ...] = ()
    """Who this step is expected to eject, refuse (add) or kill."""


@dataclass(frozen=True)
class Plan:
    rooms: tuple[str, ...]
    networks: dict[str, ipaddress.IPv4Network]
    peers: tuple[PeerSpec, ...]
    """Everybody: present from the start first, then those added by steps."""
    steps: tuple[PlannedStep, ...]
    expected: dict[str, Expectation]
    initial_policies: dict[str, RoomPolicy]

    def peer(self, name: str) -> PeerSpec:
        return next(p for p in self.peers if p.name == name)

    @property
    def initial_peers(self) -> tuple[PeerSpec, ...]:
        return tuple(p for p in self.peers if p.step is None)

    @property
    def kill_targets(self) -> frozenset[str]:
        return frozenset(name for s in self.steps if isinstance(s.step, KillStep) for name in s.peers)


# -- parsing ------------------------------------------------------------------------------------------


def _code(text: str, what: str) -> str:
    try:
        return country_code(text)
    except InvalidCountryCode as exc:
        raise ScenarioError(f"{what}: {exc}") from None


def parse_countries(text: str) -> tuple[CountryCount, ...]:
    """``US:6,DE:2,CN:3`` -> participants per country, in that order (a country at most once)."""
    result: list[CountryCount] = []
    for item in (part.strip() for part in text.split(",")):
        code, sep, count_text = item.partition(":")
        if not sep or not count_text.strip().isdigit():
            raise ScenarioError(f"--countries {text!r}: {item!r} is not CC:N (e.g. CN:3)")
        country = _code(code, f"--countries {text!r}")
        count = int(count_text)
        if count < 1:
            raise ScenarioError(f"--countries {text!r}: {country} needs at least 1 participant")
        if any(c.country == country for c in result):
            raise ScenarioError(f"--countries {text!r}: {country} is given twice")
        result.append(CountryCount(country, count))
    return tuple(result)


def parse_networks(items: Sequence[str]) -> dict[str, ipaddress.IPv4Network]:
    """``--network CN=127.86.0.0/16`` (repeatable): where a country's participants take addresses."""
    networks: dict[str, ipaddress.IPv4Network] = {}
    for item in items:
        code, sep, net_text = item.partition("=")
        if not sep:
            raise ScenarioError(f"--network {item!r}: expected CC=NETWORK, e.g. CN=127.86.0.0/16")
        country = _code(code, f"--network {item!r}")
        try:
            network = ipaddress.IPv4Network(net_text.strip(), strict=False)
        except ValueError:
            raise ScenarioError(f"--network {item!r}: {net_text!r} is not an IPv4 network") from None
        if not network.subnet_of(ipaddress.IPv4Network("127.0.0.0/8")):
            raise ScenarioError(f"--network {item!r}: participants must stay on loopback (127.0.0.0/8)")
        if network.num_addresses < 4:
            raise ScenarioError(f"--network {item!r}: too small for participants")
        networks[country] = network
    return networks


def parse_time(text: str, what: str) -> float:
    match = _TIME.match(text.strip())
    if match is None:
        raise ScenarioError(f"{what}: {text!r} is not a time (e.g. 10s, 2.5s, 500ms)")
    value = float(match.group(1))
    return value / 1000 if match.group(2) == "ms" else value


def _rooms(text: str, what: str) -> tuple[str, ...]:
    rooms = tuple(r.strip() for r in text.split(","))
    if not all(rooms):
        raise ScenarioError(f"{what}: empty room name after '@'")
    return rooms


def parse_step(text: str) -> Step:
    """One ``--at`` argument (see the module docstring for the grammar)."""
    what = f"--at {text!r}"
    time_text, sep, rest = text.partition(":")
    if not sep or not rest:
        raise ScenarioError(f"{what}: expected TIME:ACTION, e.g. 10s:deny:CN")
    at = parse_time(time_text, what)
    body, at_sign, rooms_text = rest.partition("@")
    rooms = _rooms(rooms_text, what) if at_sign else None
    action, _, argument = body.partition(":")
    action = action.strip().lower()
    if action in ("deny", "allow"):
        if not argument:
            raise ScenarioError(f"{what}: {action} needs countries, e.g. {action}:CN or {action}:US,DE")
        countries = tuple(_code(code, what) for code in argument.split(","))
        return PolicyStep(at, action, countries, rooms, text)  # type: ignore[arg-type]
    if action in ("open", "monitor", "enforce"):
        if argument:
            raise ScenarioError(f"{what}: {action} takes no argument (only @ROOM)")
        return PolicyStep(at, action, (), rooms, text)  # type: ignore[arg-type]
    if action == "kill":
        if at_sign:
            raise ScenarioError(f"{what}: kill names a participant, not a room")
        target = argument.strip()
        if _PEER_NAME.match(target):
            return KillStep(at, target, text)
        if len(target) == 2 and target.isupper():
            return KillStep(at, _code(target, what), text)
        raise ScenarioError(f"{what}: kill needs a participant name (e.g. cn-2) or a country code (CN)")
    if action == "add":
        code, sep, count_text = argument.partition(":")
        if not sep or not count_text.strip().isdigit() or int(count_text) < 1:
            raise ScenarioError(f"{what}: expected add:CC:N with N >= 1, e.g. add:CN:1")
        if rooms is not None and len(rooms) != 1:
            raise ScenarioError(f"{what}: add takes one room after '@'")
        return AddStep(at, _code(code, what), int(count_text), rooms[0] if rooms else None, text)
    raise ScenarioError(f"{what}: unknown action {action!r} (expected one of {', '.join(ACTIONS)})")


# -- planning -----------------------------------------------------------------------------------------


def room_names(count: int) -> tuple[str, ...]:
    return tuple(f"room-{i}" for i in range(1, count + 1))


def restricted(policy: RoomPolicy, peer: PeerSpec) -> bool:
    """Whether the geofence refuses or ejects ``peer`` under ``policy`` (enforced, no exemption)."""
    return (
        not policy.monitor_only and policy.restricts(peer.country) and not policy.exempts(None, peer.address)
    )


def plan_scenario(
    countries: Sequence[CountryCount],
    rooms: int,
    steps: Sequence[Step],
    *,
    duration: float,
    networks: Mapping[str, ipaddress.IPv4Network] | None = None,
    initial_policies: Mapping[str, RoomPolicy] | None = None,
) -> Plan:
    """Place everybody and play the steps in time order, recording who each step removes."""
    if rooms < 1:
        raise ScenarioError(f"--rooms {rooms}: at least one room")
    names = room_names(rooms)
    if sum(c.count for c in countries) < 1:
        raise ScenarioError("--countries: at least one participant")
    ordered = sorted(steps, key=lambda s: s.at)  # stable: steps at the same time keep their order
    for step in ordered:
        if step.at >= duration:
            raise ScenarioError(f"--at {step.text!r}: at {step.at:g} s, not before --duration {duration:g} s")
        chosen = (
            step.rooms if isinstance(step, PolicyStep) else (step.room,) if isinstance(step, AddStep) else ()
        )
        for room in chosen or ():
            if room is not None and room not in names:
                raise ScenarioError(f"--at {step.text!r}: no room {room!r} (rooms are {', '.join(names)})")

    order = [c.country for c in countries]
    order += [s.country for s in ordered if isinstance(s, AddStep) and s.country not in order]
    nets = dict(networks or {})
    for i, country in enumerate(c for c in order if c not in nets):
        nets[country] = ipaddress.IPv4Network(f"127.{FIRST_DEFAULT_NETWORK + i}.0.0/16")
    _check_disjoint(nets)

    numbers: dict[str, int] = {}

    def new_peer(country: str, room: str, step: int | None) -> PeerSpec:
        n = numbers[country] = numbers.get(country, 0) + 1
        network = nets[country]
        if n >= min(network.num_addresses - 1, MAX_PEERS_PER_COUNTRY):
            raise ScenarioError(f"{country}: network {network} has no address left for participant {n}")
        return PeerSpec(f"{country.lower()}-{n}", country, room, str(network[n]), step)

    expanded = [c.country for c in countries for _ in range(c.count)]
    peers = [new_peer(country, names[i % rooms], None) for i, country in enumerate(expanded)]
    next_room = len(peers)
    policies = {room: (initial_policies or {}).get(room, RoomPolicy()) for room in names}
    initial = dict(policies)
    expected: dict[str, Expectation] = {}
    present: list[PeerSpec] = []
    for peer in peers:
        if restricted(policies[peer.room], peer):
            expected[peer.name] = Expectation("refused")
        else:
            present.append(peer)

    planned: list[PlannedStep] = []
    for index, step in enumerate(ordered):
        if isinstance(step, PolicyStep):
            changed = {room: step.apply(policies[room]) for room in step.rooms or names}
            policies.update(changed)
            removed = [p for p in present if p.room in changed and restricted(policies[p.room], p)]
            for peer in removed:
                expected[peer.name] = Expectation("ejected", index)
                present.remove(peer)
            planned.append(PlannedStep(index, step, changed, (), tuple(p.name for p in removed)))
        elif isinstance(step, KillStep):
            victim = _kill_target(step, present)
            expected[victim.name] = Expectation("killed", index)
            present.remove(victim)
            planned.append(PlannedStep(index, step, {}, (victim.name,), (victim.name,)))
        else:
            added: list[PeerSpec] = []
            for _ in range(step.count):
                room = step.room or names[next_room % rooms]
                next_room += step.room is None
                added.append(new_peer(step.country, room, index))
            peers += added
            refused = [p for p in added if restricted(policies[p.room], p)]
            for peer in added:
                if peer in refused:
                    expected[peer.name] = Expectation("refused", index)
                else:
                    present.append(peer)
            planned.append(
                PlannedStep(index, step, {}, tuple(p.name for p in added), tuple(p.name for p in refused))
            )
    for peer in present:
        expected[peer.name] = Expectation("stays")
    return Plan(names, nets, tuple(peers), tuple(planned), expected, initial)


def _kill_target(step: KillStep, present: list[PeerSpec]) -> PeerSpec:
    if _PEER_NAME.match(step.target):
        victim = next((p for p in present if p.name == step.target), None)
        if victim is None:
            raise ScenarioError(
                f"--at {step.text!r}: {step.target} is not expected in a room at {step.at:g} s "
                "(no such participant, or already refused, ejected or killed)"
            )
        return victim
    candidates = [p for p in present if p.country == step.target]
    if not candidates:
        raise ScenarioError(f"--at {step.text!r}: no {step.target} participant is expected in a room then")
    return candidates[-1]


def _check_disjoint(networks: Mapping[str, ipaddress.IPv4Network]) -> None:
    items = sorted(networks.items())
    for i, (a, net_a) in enumerate(items):
        for b, net_b in items[i + 1 :]:
            if net_a.overlaps(net_b):
                raise ScenarioError(f"--network: {a} {net_a} and {b} {net_b} overlap")
