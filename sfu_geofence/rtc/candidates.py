"""Bounded ICE work per connection: how many remote candidates, pairs and peer-reflexive candidates
aioice may hold, whatever a client writes in its SDP or sends as STUN checks.

aioice pairs each remote candidate with linear scans over every candidate and pair it holds, and
re-sorts the whole check list each time: an answer with 1 500 extra candidates stalled the event loop
1.6 s, and the SFU then sent connectivity checks to every address listed. Each authenticated STUN
request from a new source port became another peer-reflexive candidate and pair, and the lists never
shrank. The functions here run before aioice sees a candidate or a check (see
:func:`sfu_geofence.rtc.ice.install`), so that work stays bounded by :class:`IceLimits`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from aioice import Candidate, Connection, stun
from aioice.ice import CandidatePair

logger = logging.getLogger(__name__)

_UNCHECKED = (CandidatePair.State.FROZEN, CandidatePair.State.WAITING)


@dataclass(frozen=True)
class IceLimits:
    """What one connection may hold; a browser offers a handful of candidates, never dozens."""

    remote_candidates: int = 20
    """Remote candidates kept (from the SDP and learned peer-reflexive); later ones are ignored. The
    checks that came before the answer was applied may add ``peer_reflexive`` more at ``connect()``."""
    pairs: int = 20
    """Candidate pairs on the check list; the lowest-priority unchecked pairs go first."""
    peer_reflexive: int = 4
    """Peer-reflexive candidates kept; a new one replaces the oldest that is not nominated."""
    receive_queue: int = 256
    """Datagrams waiting for DTLS/SRTP (about 1.7 s of 1.5 Mbit/s video); more are dropped."""

    def __post_init__(self) -> None:
        for name in ("remote_candidates", "pairs", "peer_reflexive", "receive_queue"):
            if getattr(self, name) < 1:
                raise ValueError(f"IceLimits.{name} must be at least 1")


@dataclass
class CandidateCounters:
    """What a connection's limits turned away: for tests, benchmarks and operators' debugging."""

    candidates_ignored: int = 0
    """Remote candidates (SDP) ignored because the connection held its limit already."""
    pairs_removed: int = 0
    """Unchecked pairs removed to keep the check list at its limit."""
    peer_reflexive_pruned: int = 0
    """Peer-reflexive candidates (and their pairs) dropped to make room for a newer one."""
    checks_ignored: int = 0
    """STUN checks from new sources ignored (no reply) because no candidate could be made room for."""


def bounded_candidate_lines(sdp: str, limit: int) -> str:
    """``sdp`` with only its first ``limit`` distinct ``a=candidate`` lines (repeats of those kept).

    aiortc parses every candidate line and hands each to aioice: even ignored, each costs ~25 µs of
    event loop. A client repeats its candidates in every bundled m-line (aiortc does), so repeats stay;
    a list longer than any client's is cut here, in one pass over the text, before anything parses it.
    """
    if sdp.count("a=candidate:") <= limit:
        return sdp
    kept: set[str] = set()
    lines = []
    for line in sdp.splitlines(keepends=True):
        if line.startswith("a=candidate:") and line not in kept:
            if len(kept) >= limit:
                continue
            kept.add(line)
        lines.append(line)
    return "".join(lines)


def admits_remote_candidate(connection: Connection, limits: IceLimits, counters: CandidateCounters) -> bool:
    """False once the connection holds ``limits.remote_candidates``: the candidate never reaches aioice."""
    if len(connection._remote_candidates) < limits.remote_candidates:
        return True
    counters.candidates_ignored += 1
    if counters.candidates_ignored == 1:
        logger.debug("remote candidates beyond %d ignored", limits.remote_candidates)
    return False


def trim_pairs(connection: Connection, limits: IceLimits, counters: CandidateCounters) -> None:
    """Remove the lowest-priority unchecked pairs beyond ``limits.pairs`` (the list is sorted)."""
    check_list: list[CandidatePair] = connection._check_list
    index = len(check_list) - 1
    while len(check_list) > limits.pairs and index >= 0:
        pair = check_list[index]
        if pair.state in _UNCHECKED and not pair.nominated:
            _remove_pair(check_list, pair)
            counters.pairs_removed += 1
        index -= 1


def admits_check(
    connection: Connection,
    message: Any,
    addr: tuple[str, int],
    limits: IceLimits,
    counters: CandidateCounters,
) -> bool:
    """Whether an incoming STUN check may reach aioice; makes room for a new peer-reflexive candidate.

    A check from a known remote candidate always may. One from a new source would make aioice learn
    a peer-reflexive candidate: it may once authenticated, and only if the connection has room for
    one, after dropping its oldest peer-reflexive candidate that is not nominated (with its pairs)
    when ``limits.peer_reflexive`` or ``limits.remote_candidates`` is reached. Before ``connect()``,
    as many new sources as ``limits.peer_reflexive`` may have checks waiting for it.
    """
    remote: list[Candidate] = connection._remote_candidates
    host, port = addr
    for candidate in remote:
        if candidate.port == port and candidate._network_host == host:
            return True
    if not _authentic(connection, message):
        return True  # aioice answers it with an error and learns nothing
    if not connection._early_checks_done:
        return _admits_early_check(connection, addr, limits, counters)
    reflexive = [c for c in remote if c.type == "prflx"]
    if len(reflexive) < limits.peer_reflexive and len(remote) < limits.remote_candidates:
        return True
    nominated = {pair.remote_candidate for pair in connection._nominated.values()}
    oldest = next((c for c in reflexive if c not in nominated), None)
    if oldest is None:
        counters.checks_ignored += 1
        return False
    remote.remove(oldest)
    for pair in [p for p in connection._check_list if p.remote_candidate is oldest]:
        _remove_pair(connection._check_list, pair)
    counters.peer_reflexive_pruned += 1
    return True


def _admits_early_check(
    connection: Connection, addr: tuple[str, int], limits: IceLimits, counters: CandidateCounters
) -> bool:
    """Whether a check from a new source may wait for ``connect()`` (aioice keeps up to 100).

    The offer gives a client the server's credentials, so it can send checks before its answer is
    applied; ``connect()`` then learns a peer-reflexive candidate, a pair and a triggered check for
    every source waiting, with none of the checks above. So at most ``limits.peer_reflexive`` new
    sources may wait; nothing is nominated yet, and a real client's checks are retransmitted until
    its answer's candidates make them known.
    """
    known = {(c._network_host, c.port) for c in connection._remote_candidates}
    waiting = {source for _, source, _ in connection._early_checks} - known
    if addr in waiting or len(waiting) < limits.peer_reflexive:
        return True
    counters.checks_ignored += 1
    return False


def _authentic(connection: Connection, message: Any) -> bool:
    return (
        message.message_method == stun.Method.BINDING
        and "MESSAGE-INTEGRITY" in message.attributes
        and "USERNAME" in message.attributes
        and connection._valid_username(message.attributes["USERNAME"])
        and message.check_message_integrity(connection.local_password.encode("utf8"))
    )


def _remove_pair(check_list: list[CandidatePair], pair: CandidatePair) -> None:
    if pair.task is not None:
        pair.task.cancel()
    check_list.remove(pair)
