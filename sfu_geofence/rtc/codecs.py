"""Codec matching without ``copy.deepcopy``: the same result as aiortc's, at a fraction of the cost.

aiortc matches codecs for every m-line of every offer it makes and answer it applies
(``rtcpeerconnection.find_common_codecs``), deep-copying each codec it keeps: with ~16 m-lines, about
40 % of the 5-10 ms a negotiation step holds the event loop, i.e. of the stall every forwarded
stream sees when a join, leave or ejection makes a room renegotiate. :func:`find_common_codecs`
builds the copies field by field (they hold strings, numbers, a list of feedback values and a dict
of parameters); :func:`install` puts it in aiortc's place (aiortc 1.16.0, asserted).
"""

from __future__ import annotations

from aiortc import rtcpeerconnection, rtp
from aiortc.codecs import is_rtx
from aiortc.rtcrtpparameters import RTCRtcpFeedback, RTCRtpCodecParameters

from . import require_pinned_versions

AIORTC_FIND_COMMON_CODECS = rtcpeerconnection.find_common_codecs
"""aiortc's own, kept for comparison (tests/rtc/test_codecs.py)."""


def copy_codec(codec: RTCRtpCodecParameters) -> RTCRtpCodecParameters:
    """A copy that shares nothing mutable with ``codec`` (what ``copy.deepcopy`` gave)."""
    return RTCRtpCodecParameters(
        mimeType=codec.mimeType,
        clockRate=codec.clockRate,
        channels=codec.channels,
        payloadType=codec.payloadType,
        rtcpFeedback=[RTCRtcpFeedback(type=f.type, parameter=f.parameter) for f in codec.rtcpFeedback],
        parameters=dict(codec.parameters),
    )


def find_common_codecs(
    local_codecs: list[RTCRtpCodecParameters], remote_codecs: list[RTCRtpCodecParameters]
) -> list[RTCRtpCodecParameters]:
    """aiortc 1.16.0's ``find_common_codecs``, line for line, with :func:`copy_codec` for deepcopy."""
    common = []
    common_base: dict[int, RTCRtpCodecParameters] = {}
    for c in remote_codecs:
        # for RTX, check we accepted the base codec
        if is_rtx(c):
            apt = c.parameters.get("apt")
            if isinstance(apt, int) and apt in common_base:
                base = common_base[apt]
                if c.clockRate == base.clockRate:
                    common.append(copy_codec(c))
            continue
        for codec in local_codecs:
            if rtcpeerconnection.is_codec_compatible(codec, c):
                codec = copy_codec(codec)
                if c.payloadType in rtp.DYNAMIC_PAYLOAD_TYPES:
                    codec.payloadType = c.payloadType
                codec.rtcpFeedback = [x for x in codec.rtcpFeedback if x in c.rtcpFeedback]
                common.append(codec)
                assert codec.payloadType is not None
                common_base[codec.payloadType] = codec
                break
    return common


def install() -> None:
    """Make aiortc's offers and answers use :func:`find_common_codecs` (idempotent, process-wide)."""
    require_pinned_versions()
    rtcpeerconnection.find_common_codecs = find_common_codecs
