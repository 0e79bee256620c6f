"""A synthetic participant in a room for as long as a test needs it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from ..synthetic.client import SyntheticPeer, synthetic_tracks


@contextlib.asynccontextmanager
async def peer_in(
    url: str,
    room: str,
    address: str,
    *,
    name: str = "",
    media: bool = False,
    max_redirects: int = 1,
    within: float = 30.0,
) -> AsyncIterator[SyntheticPeer]:
    """A participant that tried to join ``room`` at ``url`` from ``address`` (named ``name``, else its
    address), following ``max_redirects`` redirects and sending the synthetic clips when ``media``:
    joined, or refused or redirected (then ``closed`` is set); closed on exit."""
    tracks = synthetic_tracks() if media else []
    peer = SyntheticPeer(url, room, address, name=name or address, tracks=tracks, max_redirects=max_redirects)
    try:
        await peer.join(within=within)
        yield peer
    finally:
        await peer.close()


@contextlib.asynccontextmanager
async def joined(
    url: str, room: str, address: str, *, media: bool = False, within: float = 30.0
) -> AsyncIterator[SyntheticPeer]:
    """A peer joined to ``room`` through the node at ``url`` from ``address`` (its name too), sending
    the synthetic clips when ``media``; AssertionError when it is not admitted; closed on exit."""
    async with peer_in(url, room, address, media=media, within=within) as peer:
        assert peer.participant_id is not None, peer.messages
        yield peer


async def join_refused(url: str, room: str, address: str, *, within: float = 30.0) -> SyntheticPeer:
    """A join attempt from ``address`` expected to be refused: the closed peer, for its close code and
    messages (AssertionError with them when it was admitted instead)."""
    peer = SyntheticPeer(url, room, address, name=address, tracks=[])
    try:
        await peer.join(within=within)
        assert peer.participant_id is None, f"{address} was admitted: {peer.messages}"
        await asyncio.wait_for(peer.closed.wait(), within)
    finally:
        await peer.close()
    return peer
