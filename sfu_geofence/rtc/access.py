"""Read and set what aiortc keeps private but ``sfu/`` needs: the one place outside aiortc that names it.

aiortc 1.16.0 keeps a transceiver's negotiated codecs and header extensions, a sender's SSRC and the
ids its ``a=msid`` line carries in private attributes with no public accessor; these functions are the
only way the rest of the package (and the tests) reach them, so a change of aiortc shows up here alone.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from aiortc import RTCDtlsTransport, RTCRtpSender, RTCRtpTransceiver
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from . import require_pinned_versions

require_pinned_versions()

RtpSend = Callable[[bytes], Coroutine[Any, Any, None]]


def negotiated_codecs(transceiver: RTCRtpTransceiver) -> list[RTCRtpCodecParameters]:
    """The codecs the last negotiation settled on for this m-line (with their payload types)."""
    return transceiver._codecs


def header_extension_ids(transceiver: RTCRtpTransceiver) -> dict[str, int]:
    """The negotiated RTP header extensions of this m-line: id by URI."""
    return {extension.uri: extension.id for extension in transceiver._headerExtensions}


def sender_ssrc(sender: RTCRtpSender) -> int:
    """The SSRC a sender stamps on its RTP packets."""
    return sender._ssrc


def set_msid(sender: RTCRtpSender, stream_id: str, track_id: str) -> None:
    """Set the stream and track ids the sender's ``a=msid`` line carries in the next offer."""
    sender._stream_id = stream_id
    sender._track_id = track_id


async def send_rtp(transport: RTCDtlsTransport, data: bytes) -> None:
    """Send one clear-text RTP or RTCP packet SRTP-protected on a DTLS transport."""
    await transport._send_rtp(data)


def intercept_rtp(transport: RTCDtlsTransport, wrap: Callable[[RtpSend], RtpSend]) -> None:
    """Route every packet the transport protects and sends through ``wrap(original send)``."""
    transport._send_rtp = wrap(transport._send_rtp)  # type: ignore[method-assign,assignment]
