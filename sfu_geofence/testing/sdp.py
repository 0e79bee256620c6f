"""SDP rewrites a hostile client makes, for tests that show the server does not believe them."""

from __future__ import annotations


def relabel_as_relay(sdp: str) -> str:
    """Every host candidate claims to be a TURN relay's (``typ relay raddr 0.0.0.0 rport 0``).

    One word of the client's own SDP: if the server took the label for the truth, the room's
    ``relayed`` rule (not the media address's country) would decide this participant.
    """
    return sdp.replace(" typ host", " typ relay raddr 0.0.0.0 rport 0")
