"""Talking to a real Janus (meetecho) over its HTTP API: the seam the Janus geofence, the load tester
and the benchmarks share (issue 14). Nothing here is geofence logic yet."""

from .client import JanusError, JanusHandle, JanusSession
from .videoroom import VideoRoom

__all__ = ["JanusError", "JanusHandle", "JanusSession", "VideoRoom"]
