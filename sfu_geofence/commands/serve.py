"""Run the SFU: WebSocket signaling on /ws, forwarding media between the participants of each room."""

from __future__ import annotations

from ..server.serve import HELP, NAME, run
from ..server.serve import add_arguments as configure

__all__ = ["HELP", "NAME", "configure", "run"]
