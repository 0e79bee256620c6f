"""Which addresses ICE may use: the announced/bind address of a production SFU, done for aioice.

aioice gathers every interface address except 127.0.0.1 and ::1, has no option to choose, resolves
mDNS ``.local`` candidates by multicasting, and learns peer-reflexive candidates from any source that
passes a STUN check. This module wraps four methods of :class:`aioice.Connection` and the datagram
dispatch of its sockets (once, idempotently, see :func:`install`) so that a connection created while an
:class:`IcePolicy` is current:

* gathers host candidates only on the policy's ``bind`` addresses (none with the relay transport
  policy, as stock aioice),
* ignores remote candidates (SDP or trickled) outside ``allowed_remote`` and every mDNS name, never
  resolving it,
* ignores STUN checks from sources outside ``allowed_remote``: no reply, no peer-reflexive candidate,
* holds at most :class:`~sfu_geofence.rtc.candidates.IceLimits` remote candidates, pairs and
  peer-reflexive candidates (:mod:`sfu_geofence.rtc.candidates`), and
* hands DTLS/SRTP only datagrams from the nominated pair's remote address, through a bounded queue
  (:mod:`sfu_geofence.rtc.media_source`).

It also makes the nominated (selected) candidate pair observable, which aioice has no API for:
:func:`observe_selected_pair` calls back when a connection's pair is first nominated and whenever it
changes, which is when a media-address check must run again.

Whether a pair is *relayed* is the server's judgement, never the client's: a remote candidate's ``typ``
is whatever the client wrote in its SDP (``typ relay raddr 0.0.0.0 rport 0`` costs one word), so a pair
is relayed only when its remote address lies in one of the policy's ``relay_networks`` (the TURN servers
the operator declared, ``--turn-relay``). Every other pair, whatever its candidate type, is decided on
its address like a host candidate.

The policy is read from a :class:`contextvars.ContextVar` when the :class:`aioice.Connection` is built
(inside ``RTCPeerConnection.addTransceiver`` / ``setRemoteDescription``), so many peers in one process
can each bind a different loopback address by setting the variable in their own task. Connections
created with no policy current behave exactly as stock aioice does.
"""

from __future__ import annotations

import contextvars
import ipaddress
import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from aioice import Candidate, Connection, TransportPolicy, mdns
from aioice.ice import CandidatePair, StunProtocol

from ..core.addresses import IPAddress, parse_address, unmapped_network
from ..core.addresses import IPNetwork as IPNetwork  # re-exported: the policy's field type
from . import require_pinned_versions
from .candidates import CandidateCounters, IceLimits, admits_check, admits_remote_candidate, trim_pairs
from .media_source import MediaSource

logger = logging.getLogger(__name__)


LOOPBACK_NETWORKS: tuple[IPNetwork, ...] = (
    ipaddress.IPv4Network("127.0.0.0/8"),
    ipaddress.IPv6Network("::1/128"),
)


@dataclass(frozen=True)
class IcePolicy:
    """Local addresses to gather on and remote addresses to talk to, for ICE connections."""

    bind: tuple[str, ...] = ("127.0.0.1",)
    """Local addresses to create host candidates on (the SFU's announced addresses)."""

    allowed_remote: tuple[IPNetwork, ...] = LOOPBACK_NETWORKS
    """Remote candidates and STUN sources outside these networks (and ``relay_networks``) are ignored."""

    relay_networks: tuple[IPNetwork, ...] = ()
    """Relay addresses of the TURN servers the operator declared: media from these is relayed media.

    A candidate's ``typ relay`` counts for nothing: only a remote address inside these networks does.
    They are also allowed remotes (a declared relay is where relayed media comes from)."""

    limits: IceLimits = field(default_factory=IceLimits)
    """How many candidates, pairs and waiting datagrams one connection may hold."""

    def __post_init__(self) -> None:
        if not self.bind:
            raise ValueError("an ICE policy needs at least one bind address")
        for address in self.bind:
            ipaddress.ip_address(address)  # raises ValueError naming the bad address
        # Remote addresses are compared unmapped (::ffff:a.b.c.d as a.b.c.d): so are the networks.
        for name in ("allowed_remote", "relay_networks"):
            unmapped = tuple(dict.fromkeys(unmapped_network(n) for n in getattr(self, name)))
            object.__setattr__(self, name, unmapped)

    @classmethod
    def from_strings(
        cls, bind: Iterable[str], allowed_remote: Iterable[str], relay_networks: Iterable[str] = ()
    ) -> IcePolicy:
        """Build a policy from command-line style strings (``"127.0.0.1"``, ``"127.0.0.0/8"``)."""
        return cls(
            bind=tuple(bind),
            allowed_remote=networks(allowed_remote),
            relay_networks=networks(relay_networks),
        )

    def allows_remote(self, host: str) -> bool:
        """True if ``host`` is an IP literal in ``allowed_remote`` or ``relay_networks`` (names never are)."""
        address = _address(host)
        return address is not None and (
            _inside(address, self.allowed_remote) or _inside(address, self.relay_networks)
        )

    def is_relay(self, host: str) -> bool:
        """True if ``host`` is an IP literal inside ``relay_networks``: a declared TURN relay's address."""
        address = _address(host)
        return address is not None and _inside(address, self.relay_networks)


def networks(texts: Iterable[str]) -> tuple[IPNetwork, ...]:
    """Parse ``"127.0.0.0/8"``-style strings (host bits allowed; ``::ffff:10.0.0.0/104`` as the IPv4
    network it is); raises ValueError naming a bad one."""
    return tuple(unmapped_network(ipaddress.ip_network(text.strip(), strict=False)) for text in texts)


def _address(host: str) -> IPAddress | None:
    """``host`` as an address (a zone id dropped, ``::ffff:a.b.c.d`` as IPv4), or None for a name."""
    try:
        return parse_address(host)
    except ValueError:
        return None


def _inside(address: IPAddress, within: tuple[IPNetwork, ...]) -> bool:
    return any(address in network for network in within)


_current: contextvars.ContextVar[IcePolicy | None] = contextvars.ContextVar(
    "sfu_geofence_ice_policy", default=None
)

_POLICY_ATTRIBUTE = "_sfu_geofence_ice_policy"
_GUARD_ATTRIBUTE = "_sfu_geofence_ice_guard"


def set_policy(policy: IcePolicy | None) -> contextvars.Token[IcePolicy | None]:
    """Make ``policy`` current for connections created later in this context (this task and its children)."""
    install()
    return _current.set(policy)


@contextmanager
def use_policy(policy: IcePolicy) -> Iterator[IcePolicy]:
    """Make ``policy`` current for connections created inside the block."""
    token = set_policy(policy)
    try:
        yield policy
    finally:
        _current.reset(token)


def policy_of(connection: Connection) -> IcePolicy | None:
    """The policy a connection was created under, or None for a stock connection."""
    policy: IcePolicy | None = getattr(connection, _POLICY_ATTRIBUTE, None)
    return policy


@dataclass
class _Guard:
    """The per-connection state of a connection created under a policy."""

    policy: IcePolicy
    media_source: MediaSource
    counters: CandidateCounters = field(default_factory=CandidateCounters)


def _guard_of(connection: Connection) -> _Guard | None:
    guard: _Guard | None = getattr(connection, _GUARD_ATTRIBUTE, None)
    return guard


@dataclass(frozen=True)
class IceStats:
    """How much one connection holds and what its limits turned away (a snapshot)."""

    remote_candidates: int
    peer_reflexive: int
    pairs: int
    receive_queue: int
    """Datagrams waiting for DTLS/SRTP now."""
    candidates: CandidateCounters
    foreign_dropped: int
    """Non-STUN datagrams dropped because they did not come from the media source."""
    overflow_dropped: int
    """Datagrams dropped because the receive queue was full."""


def ice_stats(connection: Connection) -> IceStats:
    """A snapshot of the connection's lists and counters (zero counters for a stock connection)."""
    guard = _guard_of(connection)
    remote: list[Candidate] = connection._remote_candidates
    return IceStats(
        remote_candidates=len(remote),
        peer_reflexive=sum(1 for c in remote if c.type == "prflx"),
        pairs=len(connection._check_list),
        receive_queue=connection._queue.qsize(),
        candidates=CandidateCounters() if guard is None else replace(guard.counters),
        foreign_dropped=0 if guard is None else guard.media_source.foreign_dropped,
        overflow_dropped=0 if guard is None else guard.media_source.overflow_dropped,
    )


@dataclass(frozen=True)
class SelectedPair:
    """The candidate pair ICE nominated for a connection: where its media really comes from."""

    local_address: tuple[str, int]
    """Our side: one of the policy's bind addresses and its port."""

    remote_address: tuple[str, int]
    """The peer's transport address as we send to it (a relay's address if the peer is relayed)."""

    remote_type: str
    """Remote candidate type as the peer labelled it (``host``, ``srflx``, ``prflx``, ``relay``):
    information only, never a reason to trust anything."""

    relayed: bool = False
    """True when the remote address is a declared TURN relay's (the policy's ``relay_networks``),
    whatever the candidate's type says."""

    @classmethod
    def of(cls, pair: CandidatePair, policy: IcePolicy | None) -> SelectedPair:
        """The pair as the server judges it: relayed only through a relay ``policy`` declares."""
        remote_address: tuple[str, int] = pair.remote_addr
        return cls(
            local_address=pair.local_addr,
            remote_address=remote_address,
            remote_type=pair.remote_candidate.type,
            relayed=policy is not None and policy.is_relay(remote_address[0]),
        )


SelectedPairObserver = Callable[[SelectedPair], None]


class _ObservedNominations(dict[int, CandidatePair]):
    """aioice's ``Connection._nominated``, calling observers when component 1's pair changes.

    Only item assignment is intercepted, so the per-packet ``get`` stays the C dict's.
    """

    def __init__(self, policy: IcePolicy | None) -> None:
        super().__init__()
        self.policy = policy
        self.observers: list[SelectedPairObserver] = []

    def __setitem__(self, component: int, pair: CandidatePair) -> None:
        previous = self.get(component)
        super().__setitem__(component, pair)
        if component != 1 or previous is pair:
            return
        selected = SelectedPair.of(pair, self.policy)
        for observer in list(self.observers):
            try:
                observer(selected)
            except Exception:
                logger.exception("selected-pair observer failed")


def observe_selected_pair(connection: Connection, observer: SelectedPairObserver) -> None:
    """Call ``observer`` with the connection's selected pair now (if any) and whenever it changes.

    Works for connections created after :func:`install` (every connection an :class:`IcePolicy` governs).
    """
    nominations = connection._nominated
    if not isinstance(nominations, _ObservedNominations):
        raise RuntimeError("selected pairs are observable only on connections created after install()")
    nominations.observers.append(observer)
    pair = nominations.get(1)
    if pair is not None:
        observer(SelectedPair.of(pair, policy_of(connection)))


def selected_pair(connection: Connection) -> SelectedPair | None:
    """The connection's selected pair, or None before ICE has nominated one."""
    pair = connection._nominated.get(1)
    return None if pair is None else SelectedPair.of(pair, policy_of(connection))


_installed = False


def install() -> None:
    """Wrap the :class:`aioice.Connection` methods described in the module docstring (idempotent)."""
    global _installed
    if _installed:
        return
    require_pinned_versions()

    original_init = Connection.__init__
    original_component_candidates = Connection.get_component_candidates
    original_add_remote = Connection.add_remote_candidate
    original_request_received = Connection.request_received
    original_datagram_received = StunProtocol.datagram_received

    def __init__(self: Connection, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        policy = _current.get()
        setattr(self, _POLICY_ATTRIBUTE, policy)
        self._nominated = _ObservedNominations(policy)
        if policy is not None:
            setattr(self, _GUARD_ATTRIBUTE, _Guard(policy, MediaSource(self, policy.limits.receive_queue)))

    async def get_component_candidates(
        self: Connection,
        component: int,
        addresses: list[str],
        timeout: int = 5,  # noqa: ASYNC109 (aioice's)
    ) -> list[Candidate]:
        policy = policy_of(self)
        # With iceTransportPolicy "relay" aioice gathers no host candidate (addresses is empty), and
        # neither does the policy: only the TURN server's relayed candidate may be offered.
        if policy is not None and self._transport_policy is TransportPolicy.ALL:
            addresses = list(policy.bind)
        return await original_component_candidates(self, component, addresses, timeout)

    async def add_remote_candidate(self: Connection, remote_candidate: Candidate | None) -> None:
        guard = _guard_of(self)
        if guard is None or remote_candidate is None:
            await original_add_remote(self, remote_candidate)
            return
        if mdns.is_mdns_hostname(remote_candidate.host):
            logger.debug("ignoring mDNS remote candidate %s (never resolved)", remote_candidate.host)
            return
        if not guard.policy.allows_remote(remote_candidate.host):
            logger.debug("ignoring remote candidate outside allowed ranges: %s", remote_candidate.host)
            return
        if not admits_remote_candidate(self, guard.policy.limits, guard.counters):
            return
        await original_add_remote(self, remote_candidate)
        trim_pairs(self, guard.policy.limits, guard.counters)

    def request_received(self: Connection, message: Any, addr: tuple[str, int], protocol: Any) -> None:
        guard = _guard_of(self)
        if guard is not None:
            if not guard.policy.allows_remote(addr[0]):
                logger.debug("ignoring STUN check from outside allowed ranges: %s", addr[0])
                return
            if not self._closing and not admits_check(
                self, message, addr, guard.policy.limits, guard.counters
            ):
                return
        original_request_received(self, message, addr, protocol)
        if guard is not None:
            trim_pairs(self, guard.policy.limits, guard.counters)

    def datagram_received(self: StunProtocol, data: bytes | str, addr: tuple[Any, ...]) -> None:
        guard = _guard_of(self.receiver)
        if guard is None:
            original_datagram_received(self, data, addr)
        else:
            guard.media_source.datagram_received(self, data, addr)  # type: ignore[arg-type]

    Connection.__init__ = __init__  # type: ignore[method-assign]
    Connection.get_component_candidates = get_component_candidates  # type: ignore[method-assign]
    Connection.add_remote_candidate = add_remote_candidate  # type: ignore[method-assign]
    Connection.request_received = request_received  # type: ignore[method-assign]
    StunProtocol.datagram_received = datagram_received  # type: ignore[method-assign]
    _installed = True
