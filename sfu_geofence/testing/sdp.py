"""SDP rewrites a hostile client makes, for tests that show the server does not believe them."""

from __future__ import annotations

import re
from collections.abc import Callable


def relabel_as_relay(sdp: str) -> str:
    """Every host candidate claims to be a TURN relay's (``typ relay raddr 0.0.0.0 rport 0``).

    One word of the client's own SDP: if the server took the label for the truth, the room's
    ``relayed`` rule (not the media address's country) would decide this participant.
    """
    return sdp.replace(" typ host", " typ relay raddr 0.0.0.0 rport 0")


def with_extra_candidates(count: int) -> Callable[[str], str]:
    """An answer rewrite: ``count`` more host candidates (127.49.x.y, port 9) after the first real one.

    A candidate bomb: each is an allowed loopback address, so only the server's limits stop it being
    paired and checked.
    """

    def rewrite(sdp: str) -> str:
        extra = "".join(
            f"a=candidate:bomb{n} 1 udp 2130706431 127.49.{n // 250}.{n % 250 + 1} 9 typ host\r\n"
            for n in range(count)
        )
        first = re.search(r"a=candidate:[^\r\n]*\r\n", sdp)
        if first is None:
            raise ValueError("the answer has no candidate to put the bomb after")
        return sdp[: first.end()] + extra + sdp[first.end() :]

    return rewrite


def ice_credentials(sdp: str) -> tuple[str, str]:
    """The first ``a=ice-ufrag`` and ``a=ice-pwd`` of an SDP."""
    ufrag = re.search(r"^a=ice-ufrag:(\S+)", sdp, re.MULTILINE)
    pwd = re.search(r"^a=ice-pwd:(\S+)", sdp, re.MULTILINE)
    if ufrag is None or pwd is None:
        raise ValueError("the SDP has no ICE credentials")
    return ufrag.group(1), pwd.group(1)
