"""Which addresses ICE may use: the announced/bind address of a production SFU, done for aioice.

aioice gathers every interface address except 127.0.0.1 and ::1, has no option to choose, resolves
mDNS ``.local`` candidates by multicasting, and learns peer-reflexive candidates from any source that
passes a STUN check. This module wraps three methods of :class:`aioice.Connection` (once, idempotently,
see :func:`install`) so that a connection created while an :class:`IcePolicy` is current:

* gathers host candidates only on the policy's ``bind`` addresses (none with the relay transport
  policy, as stock aioice),
* ignores remote candidates (SDP or trickled) outside ``allowed_remote`` and every mDNS name, never
  resolving it, and
* ignores STUN checks from sources outside ``allowed_remote``: no reply, no peer-reflexive candidate.

It also makes the nominated (selected) candidate pair observable, which aioice has no API for:
:func:`observe_selected_pair` calls back when a connection's pair is first nominated and whenever it
changes, which is when a media-address check must run again.

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
from dataclasses import dataclass
from typing import Any

from aioice import Candidate, Connection, TransportPolicy, mdns
from aioice.ice import CandidatePair

from . import require_pinned_versions

logger = logging.getLogger(__name__)

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

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
    """Remote candidates and STUN sources outside these networks are ignored."""

    def __post_init__(self) -> None:
        if not self.bind:
            raise ValueError("an ICE policy needs at least one bind address")
        for address in self.bind:
            ipaddress.ip_address(address)  # raises ValueError naming the bad address

    @classmethod
    def from_strings(cls, bind: Iterable[str], allowed_remote: Iterable[str]) -> IcePolicy:
        """Build a policy from command-line style strings (``"127.0.0.1"``, ``"127.0.0.0/8"``)."""
        return cls(
            bind=tuple(bind),
            allowed_remote=tuple(ipaddress.ip_network(n, strict=False) for n in allowed_remote),
        )

    def allows_remote(self, host: str) -> bool:
        """True if ``host`` is an IP literal inside ``allowed_remote`` (names never are)."""
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.allowed_remote)


_current: contextvars.ContextVar[IcePolicy | None] = contextvars.ContextVar(
    "sfu_geofence_ice_policy", default=None
)

_POLICY_ATTRIBUTE = "_sfu_geofence_ice_policy"


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


@dataclass(frozen=True)
class SelectedPair:
    """The candidate pair ICE nominated for a connection: where its media really comes from."""

    local_address: tuple[str, int]
    """Our side: one of the policy's bind addresses and its port."""

    remote_address: tuple[str, int]
    """The peer's transport address as we send to it (a relay's address if the peer is relayed)."""

    remote_type: str
    """Remote candidate type: ``host``, ``srflx``, ``prflx`` or ``relay``."""

    @property
    def relayed(self) -> bool:
        """True when the remote address is a TURN relay's, not the peer's own."""
        return self.remote_type == "relay"

    @classmethod
    def of(cls, pair: CandidatePair) -> SelectedPair:
        return cls(
            local_address=pair.local_addr,
            remote_address=pair.remote_addr,
            remote_type=pair.remote_candidate.type,
        )


SelectedPairObserver = Callable[[SelectedPair], None]


class _ObservedNominations(dict[int, CandidatePair]):
    """aioice's ``Connection._nominated``, calling observers when component 1's pair changes.

    Only item assignment is intercepted, so the per-packet ``get`` stays the C dict's.
    """

    def __init__(self) -> None:
        super().__init__()
        self.observers: list[SelectedPairObserver] = []

    def __setitem__(self, component: int, pair: CandidatePair) -> None:
        previous = self.get(component)
        super().__setitem__(component, pair)
        if component != 1 or previous is pair:
            return
        selected = SelectedPair.of(pair)
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
        observer(SelectedPair.of(pair))


def selected_pair(connection: Connection) -> SelectedPair | None:
    """The connection's selected pair, or None before ICE has nominated one."""
    pair = connection._nominated.get(1)
    return None if pair is None else SelectedPair.of(pair)


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

    def __init__(self: Connection, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        setattr(self, _POLICY_ATTRIBUTE, _current.get())
        self._nominated = _ObservedNominations()

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
        policy = policy_of(self)
        if policy is not None and remote_candidate is not None:
            if mdns.is_mdns_hostname(remote_candidate.host):
                logger.debug("ignoring mDNS remote candidate %s (never resolved)", remote_candidate.host)
                return
            if not policy.allows_remote(remote_candidate.host):
                logger.debug("ignoring remote candidate outside allowed ranges: %s", remote_candidate.host)
                return
        await original_add_remote(self, remote_candidate)

    def request_received(self: Connection, message: Any, addr: tuple[str, int], protocol: Any) -> None:
        policy = policy_of(self)
        if policy is not None and not policy.allows_remote(addr[0]):
            logger.debug("ignoring STUN check from outside allowed ranges: %s", addr[0])
            return
        original_request_received(self, message, addr, protocol)

    Connection.__init__ = __init__  # type: ignore[method-assign]
    Connection.get_component_candidates = get_component_candidates  # type: ignore[method-assign]
    Connection.add_remote_candidate = add_remote_candidate  # type: ignore[method-assign]
    Connection.request_received = request_received  # type: ignore[method-assign]
    _installed = True
