"""Admission control before allocation: caps per address and in total, and a join rate per address.

One address (an IPv6 /64 counts as one) must not be able to take the server's file descriptors, memory
or a room's places from everybody else. Every check here runs before anything is allocated for the
client: a WebSocket over a cap is answered with an HTTP status before the upgrade, a ``join`` over a cap
is refused before the SFU creates a peer connection (docs/protocol.md lists the codes).

Nothing grows with refused attempts: per-address usage exists only while the address holds something,
and the join-rate buckets are bounded (an address whose bucket is full again is forgotten).
"""

from __future__ import annotations

import enum
import ipaddress
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from ..core.addresses import parse_address
from ..sfu import CloseReason, Participant, SfuObserver


@dataclass(frozen=True, slots=True)
class Caps:
    """The limits; the defaults suit a single SFU process (one core forwards for a few hundred)."""

    websockets: int = 1000
    """Open signaling WebSockets, in total."""
    websockets_per_address: int = 32
    pending_joins: int = 64
    """Participants joined whose media connection is not up yet, in total (each holds a peer
    connection and its sockets for up to the negotiation and connect timeouts)."""
    pending_joins_per_address: int = 8
    participants: int = 500
    """Participants (pending or connected), in total."""
    participants_per_address: int = 32
    """Half a default room: one address (one NAT) cannot fill a room alone."""
    join_rate: float = 2.0
    """Joins per second and address, sustained (token bucket)."""
    join_burst: int = 10
    """Joins an address may make at once before the rate applies."""
    ipv6_prefix: int = 64
    """IPv6 addresses count per network of this length: one host usually has a whole /64."""
    tracked_addresses: int = 65536
    """Join-rate buckets kept at most (least recently used forgotten first)."""

    def __post_init__(self) -> None:
        for name in (
            "websockets",
            "websockets_per_address",
            "pending_joins",
            "pending_joins_per_address",
            "participants",
            "participants_per_address",
            "join_burst",
            "tracked_addresses",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"caps: {name} must be at least 1")
        if not self.join_rate > 0:
            raise ValueError("caps: join_rate must be positive")
        if not 1 <= self.ipv6_prefix <= 128:
            raise ValueError("caps: ipv6_prefix must be 1 to 128")


class Cap(enum.StrEnum):
    """Which limit refused a client (the metric label and the operator's vocabulary)."""

    WEBSOCKETS = "websockets"
    WEBSOCKETS_PER_ADDRESS = "websockets_per_address"
    PENDING_JOINS = "pending_joins"
    PENDING_JOINS_PER_ADDRESS = "pending_joins_per_address"
    PARTICIPANTS = "participants"
    PARTICIPANTS_PER_ADDRESS = "participants_per_address"
    JOIN_RATE = "join_rate"

    @property
    def per_address(self) -> bool:
        """True for the limits one address reaches alone (the client can slow down); False when
        the whole server is at capacity."""
        return self.endswith("_per_address") or self is Cap.JOIN_RATE

    @property
    def message(self) -> str:
        """What the refused client is told (nothing about anyone else)."""
        if self is Cap.JOIN_RATE:
            return "Too many joins from your address: wait a few seconds and try again."
        if self.per_address:
            return "Too many sessions from your address: close one and try again."
        return "The server is at capacity: try again later."


@dataclass(slots=True)
class _Usage:
    websockets: int = 0
    pending: int = 0
    participants: int = 0

    @property
    def idle(self) -> bool:
        return not (self.websockets or self.pending or self.participants)


@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float


class AdmissionGate(SfuObserver):
    """Counts what each address holds and refuses what would go over a cap.

    Register it as an observer of the SFU (it follows participants from ``participant_joined`` through
    ``join_completed`` to ``participant_left``); the signaling edge asks :meth:`open_websocket`
    before the upgrade and :meth:`check_join` before :meth:`Sfu.join`. Everything is synchronous:
    between a check and the allocation it guards nothing else runs.
    """

    def __init__(self, caps: Caps, clock: Callable[[], float] = time.monotonic) -> None:
        self.caps = caps
        self._clock = clock
        self._usage: dict[str, _Usage] = {}
        self._total = _Usage()
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._members: dict[str, tuple[str, bool]] = {}
        """Live participant id -> (address key, still pending)."""
        self.refusals: dict[Cap, int] = dict.fromkeys(Cap, 0)
        """Refusals per cap since start-up (the metrics read these)."""

    # -- what the edge asks ----------------------------------------------------------------------

    def key(self, address: str) -> str:
        """The unit the per-address limits count: the address, or its IPv6 network."""
        try:
            ip = parse_address(address)
        except ValueError:
            return address
        if isinstance(ip, ipaddress.IPv6Address):
            return str(ipaddress.IPv6Network((ip, self.caps.ipv6_prefix), strict=False))
        return str(ip)

    def open_websocket(self, address: str) -> Cap | None:
        """Count a new WebSocket of ``address``, or say which cap refuses it (nothing counted)."""
        key = self.key(address)
        usage = self._usage.get(key)
        if self._total.websockets >= self.caps.websockets:
            return self._refused(Cap.WEBSOCKETS)
        if usage is not None and usage.websockets >= self.caps.websockets_per_address:
            return self._refused(Cap.WEBSOCKETS_PER_ADDRESS)
        if usage is None:
            usage = self._usage[key] = _Usage()
        usage.websockets += 1
        self._total.websockets += 1
        return None

    def close_websocket(self, address: str) -> None:
        """The WebSocket :meth:`open_websocket` counted is closed."""
        self._release(self.key(address), "websockets")

    def check_join(self, address: str, *, token: bool = True) -> Cap | None:
        """May ``address`` join now? Takes a join token; the participant is counted when allocated.

        ``token=False``: the counts only, for a join that took its token earlier (a cluster node
        takes it before asking Redis where the room is, so that work is rate-limited too)."""
        caps, total = self.caps, self._total
        key = self.key(address)
        usage = self._usage.get(key) or _Usage()
        if token and not self._take_token(key):
            return self._refused(Cap.JOIN_RATE)
        if usage.pending >= caps.pending_joins_per_address:
            return self._refused(Cap.PENDING_JOINS_PER_ADDRESS)
        if usage.participants >= caps.participants_per_address:
            return self._refused(Cap.PARTICIPANTS_PER_ADDRESS)
        if total.pending >= caps.pending_joins:
            return self._refused(Cap.PENDING_JOINS)
        if total.participants >= caps.participants:
            return self._refused(Cap.PARTICIPANTS)
        return None

    # -- what operators and metrics read ---------------------------------------------------------

    @property
    def websockets(self) -> int:
        return self._total.websockets

    @property
    def pending_joins(self) -> int:
        return self._total.pending

    @property
    def participants(self) -> int:
        return self._total.participants

    @property
    def tracked(self) -> int:
        """Addresses the gate remembers now (usage or a join-rate bucket): bounded."""
        return len(self._usage) + len(self._buckets)

    # -- SfuObserver -----------------------------------------------------------------------------

    def participant_joined(self, participant: Participant) -> None:
        key = self.key(participant.address)
        usage = self._usage.setdefault(key, _Usage())
        usage.pending += 1
        usage.participants += 1
        self._total.pending += 1
        self._total.participants += 1
        self._members[participant.id] = (key, True)

    def join_completed(self, participant: Participant) -> None:
        member = self._members.get(participant.id)
        if member is not None and member[1]:
            self._members[participant.id] = (member[0], False)
            self._release(member[0], "pending")

    def participant_left(self, participant: Participant, reason: CloseReason, detail: str) -> None:
        member = self._members.pop(participant.id, None)
        if member is not None:
            if member[1]:
                self._release(member[0], "pending")
            self._release(member[0], "participants")

    # -- inside ----------------------------------------------------------------------------------

    def _refused(self, cap: Cap) -> Cap:
        self.refusals[cap] += 1
        return cap

    def _release(self, key: str, what: str) -> None:
        usage = self._usage.get(key)
        if usage is None or getattr(usage, what) == 0:
            return
        setattr(usage, what, getattr(usage, what) - 1)
        setattr(self._total, what, getattr(self._total, what) - 1)
        if usage.idle:
            del self._usage[key]

    def _take_token(self, key: str) -> bool:
        caps, now, buckets = self.caps, self._clock(), self._buckets
        bucket = buckets.get(key)
        if bucket is None:
            bucket = buckets[key] = _Bucket(float(caps.join_burst), now)
        else:
            bucket.tokens = min(caps.join_burst, bucket.tokens + (now - bucket.stamp) * caps.join_rate)
            bucket.stamp = now
            buckets.move_to_end(key)
        taken = bucket.tokens >= 1
        if taken:
            bucket.tokens -= 1
        self._forget_full_buckets(now)
        return taken

    def _forget_full_buckets(self, now: float) -> None:
        # Least recently used first: a bucket that has refilled is the same as no bucket.
        caps, buckets = self.caps, self._buckets
        while buckets:
            key, oldest = next(iter(buckets.items()))
            full = oldest.tokens + (now - oldest.stamp) * caps.join_rate >= caps.join_burst
            if not full and len(buckets) <= caps.tracked_addresses:
                return
            del buckets[key]
