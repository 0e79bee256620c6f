"""SQLite as the core stores things: one file, WAL journal, a commit per acknowledged change."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Literal

from .errors import GeofenceError


class StorageError(GeofenceError):
    """A store's SQLite file cannot be opened or written."""


#: FULL: a committed change survives a power cut (an fsync per commit, milliseconds on some disks).
#: NORMAL: it survives the process crashing; a power cut may lose the last commits.
Synchronous = Literal["FULL", "NORMAL"]


def connect(path: str | Path, schema: str, synchronous: Synchronous = "FULL") -> sqlite3.Connection:
    """Open (creating if needed) ``path`` with ``schema`` applied; ``:memory:`` keeps nothing.

    WAL lets operators read the file while the server writes; synchronous=FULL makes a committed
    change survive a power cut, which is what "acknowledged" means for policies.
    """
    if synchronous not in ("FULL", "NORMAL"):
        raise ValueError(f"synchronous must be FULL or NORMAL, not {synchronous!r}")
    try:
        connection = sqlite3.connect(str(path), isolation_level=None)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute(f"PRAGMA synchronous={synchronous}")
        connection.executescript(schema)
    except sqlite3.Error as exc:
        raise StorageError(f"cannot open {str(path)!r}: {exc}") from None
    return connection
