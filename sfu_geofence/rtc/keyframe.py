"""Hear the keyframe requests (PLI, FIR) that reach an RTCRtpSender.

aiortc's sender answers PLI and FIR by calling its private ``_send_keyframe()``, which only sets a flag
for its encoder. A sender fed pre-encoded packets never encodes, so the request would be lost;
:func:`on_keyframe_request` lets the source of those packets hear it. Written against aiortc 1.16.0.
"""

from __future__ import annotations

from collections.abc import Callable

from aiortc import RTCRtpSender

from . import require_pinned_versions


def on_keyframe_request(sender: RTCRtpSender, callback: Callable[[], None]) -> None:
    """Call ``callback`` (on the event loop) each time a PLI or FIR for ``sender``'s SSRC arrives.

    The stock behaviour (setting the encoder's flag) is kept; callbacks chain if installed twice.
    """
    require_pinned_versions()
    original: Callable[[], None] = sender._send_keyframe

    def send_keyframe() -> None:
        original()
        callback()

    # The RTCP handler looks the method up on the instance, so an instance attribute takes precedence.
    setattr(sender, "_send_keyframe", send_keyframe)  # noqa: B010
