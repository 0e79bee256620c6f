"""The only package that reaches into aiortc/aioice internals.

Everything here is written against aiortc 1.16.0 / aioice 0.13.0 exactly (pinned in pyproject.toml);
:func:`require_pinned_versions` refuses to run on anything else rather than misbehave quietly.
"""

from __future__ import annotations

import aioice
import aiortc

AIORTC_VERSION = "1.16.0"
AIOICE_VERSION = "0.13.0"


def require_pinned_versions() -> None:
    """Fail loudly at start-up if the installed aiortc/aioice are not the versions the internals assume."""
    found = (aiortc.__version__, aioice.__version__)
    if found != (AIORTC_VERSION, AIOICE_VERSION):
        raise RuntimeError(
            f"sfu-geofence needs aiortc=={AIORTC_VERSION} and aioice=={AIOICE_VERSION}, "
            f"found aiortc=={found[0]} and aioice=={found[1]}"
        )
