"""Talking to a real Janus (meetecho) over its HTTP API: the seam the Janus geofence, the load tester
and the benchmarks share (issue 14). Nothing here is geofence logic yet."""

from .admin import JanusAdmin
from .client import JanusError, JanusHandle, JanusSession
from .videoroom import VideoRoom

__all__ = ["JanusAdmin", "JanusError", "JanusHandle", "JanusSession", "VideoRoom"]
