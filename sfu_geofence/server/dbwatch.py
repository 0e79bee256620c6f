"""Keeping the geolocation database fresh without an API call: watch the ``--db`` file, reload it.

``geoipupdate`` replaces the file by an atomic rename (a new inode); ``cp`` or an editor rewrites it in
place (the same inode, a new size or modification time). Both change the file's
``(st_ino, st_mtime_ns, st_size)``, which :class:`DatabaseWatch` polls on a timer. Polling one
``stat`` every few seconds costs nothing, needs no dependency (inotify bindings are Linux-only
third-party packages, and a watch on the file itself loses track of it after a rename: one would
watch the directory and filter names), and sees a file replaced on any file system, NFS included.

A change is reloaded once the file has stayed the same for one interval, so a file still being
written is not read half-way. The reload is :meth:`Geofence.reload_database`, the API's: a file that
cannot be used keeps the build in use, is audited (``reload_failed``), logged, and raises the
geofence's :attr:`~Geofence.database_alarm` (``GET /api/database`` shows it) until a reload works.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from dataclasses import dataclass

from ..core.errors import DatabaseError, GeofenceError
from ..core.geofence import Geofence

logger = logging.getLogger(__name__)

WATCH_ACTOR = "database-watch"
"""The ``actor`` of the reloads this watch makes, in the audit log."""


@dataclass(frozen=True, slots=True)
class FileVersion:
    """What tells one version of a file from the next without reading it."""

    inode: int
    mtime_ns: int
    size: int

    @classmethod
    def of(cls, path: str) -> FileVersion | None:
        """The version of the file at ``path`` now; None when there is none (or it cannot be seen)."""
        try:
            found = os.stat(path)
        except OSError:
            return None
        return cls(found.st_ino, found.st_mtime_ns, found.st_size)


class DatabaseWatch:
    """Polls the geofence's database file every ``interval`` seconds and reloads it when it changed."""

    def __init__(self, geofence: Geofence, interval: float) -> None:
        if not interval > 0:
            raise ValueError(f"the database watch interval must be positive, not {interval}")
        self.geofence = geofence
        self.interval = interval
        self.reloads = 0
        """Reloads this watch started (successful or not)."""
        self._path = geofence.database.path
        self._loaded = FileVersion.of(self._path)
        self._pending: FileVersion | None = None

    def poll(self) -> None:
        """One look at the file: reload it if it changed and has stayed as it is since the last look."""
        path = self.geofence.database.path
        if path != self._path:  # an operator switched files through the API: watch the new one
            self._path, self._loaded, self._pending = path, FileVersion.of(path), None
            return
        now = FileVersion.of(path)
        if now == self._loaded:
            self._pending = None
            return
        if now is not None and now != self._pending:
            self._pending = now  # maybe still being written: look again in one interval
            return
        self._loaded, self._pending = now, None
        self.reloads += 1
        logger.info("database file %s changed: reloading it", path)
        # A file that cannot be used: the geofence has logged and audited it and raised its alarm; the
        # old build goes on deciding.
        with contextlib.suppress(DatabaseError):
            self.geofence.reload_database(actor=WATCH_ACTOR, reason="the database file changed")

    async def run(self) -> None:
        """Poll until cancelled."""
        while True:
            await asyncio.sleep(self.interval)
            try:
                self.poll()
            except GeofenceError:  # closed: the server is stopping
                return
            except Exception:  # never let the watch die silently: the next change must be seen too
                logger.exception("database watch failed")
