"""``sfu-geofence janus``: the geofence in front of an unmodified Janus (issue 14, docs/janus.md).

Clients talk to the gate's front instead of Janus's own API; the gate decides every VideoRoom join
before Janus sees it, ejects through Janus's Admin API, re-checks media paths from Janus's event
handler, and serves the same operator API as ``serve``. It uses the geofence core through the host
contract of docs/plugin.md only.
"""

from .app import GateConfig, RunningGate, running_gate
from .gate import JanusGate

__all__ = ["GateConfig", "JanusGate", "RunningGate", "running_gate"]
