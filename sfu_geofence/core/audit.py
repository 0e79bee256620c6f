"""The operator-only record of every decision and ejection, kept durably in SQLite.

Addresses and countries are sensitive: this log is for operators (admin API, files on the server),
never for other participants.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

from .errors import ClosedError
from .storage import StorageError, Synchronous, connect


class EventKind(StrEnum):
    ADMISSION = "admission"
    """A participant asked to join: the decision at signaling time."""
    MEDIA = "media"
    """The host reported a participant's media address (selected ICE pair)."""
    EJECTION = "ejection"
    """An ejection was requested from the host (or, in monitor mode, would have been), or completed."""
    DATABASE = "database"
    """A geolocation database was loaded, or a reload failed."""
    POLICY = "policy"
    """A room's policy or the server default changed."""


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One line of the audit log."""

    kind: EventKind
    outcome: str
    """E.g. ``admitted``, ``refused``, ``would_refuse``, ``requested``, ``would_eject``, ``completed``,
    ``loaded``, ``reload_failed``, ``changed``."""
    room: str | None = None
    participant: str | None = None
    address: str | None = None
    country: str | None = None
    source: str | None = None
    """Database field that gave the country."""
    database: str | None = None
    """Database build label."""
    rule: str | None = None
    """The policy in force, as text."""
    reason: str | None = None
    """Why: a decision's reason code, or what the operator who made a change wrote."""
    actor: str | None = None
    """Who made a change (a policy, an ejection by hand, a database reload), as the operator said."""
    policy_version: int | None = None
    detail: str | None = None
    """Free text: the trigger of an ejection, an error message."""
    count: int = 1
    """How many events of this shape the row stands for: above the audit's rate limit, refusals are
    counted in one summary row (no participant, no address) instead of one row each; so are a
    session's media reports beyond its limit of distinct addresses (no address)."""
    time: datetime | None = None
    """When recorded (UTC); filled in by :meth:`AuditLog.record` when None."""
    id: int | None = None
    """Row number in the log, once recorded."""


_COLUMNS = [f.name for f in fields(AuditEvent) if f.name != "id"]

_TIME = _COLUMNS.index("time")
_INTEGERS = {"policy_version": "INTEGER", "count": "INTEGER NOT NULL DEFAULT 1"}
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    {", ".join(f"{name} {_INTEGERS.get(name, 'TEXT')}" for name in _COLUMNS)}
);
CREATE INDEX IF NOT EXISTS audit_room ON audit (room, id);
CREATE INDEX IF NOT EXISTS audit_participant ON audit (participant, id);
"""
_INSERT = f"INSERT INTO audit ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' for _ in _COLUMNS)})"


DEFAULT_RESERVE = 64 * 1024 * 1024
"""Free bytes the audit log leaves on its file system: the policy store (same directory) needs them."""


class AuditLog:
    """Append-only event log in SQLite (``path``), or in memory only (``:memory:``).

    Each :meth:`record` is committed before it returns; with ``synchronous="FULL"`` (the default)
    it also survives a power cut, at the price of an fsync per event; ``"NORMAL"`` only survives a
    crash of the process, and costs microseconds (see bench/decision.py).

    The log stops writing (:meth:`record` raises StorageError) while its file system has less than
    ``reserve`` bytes free, so that a log filled by a flood of events never takes the last bytes a
    policy change needs: the audit fails first, and alone.
    """

    def __init__(
        self,
        path: str | Path = ":memory:",
        *,
        synchronous: Synchronous = "FULL",
        reserve: int = DEFAULT_RESERVE,
    ) -> None:
        self._db = connect(path, _SCHEMA, synchronous)
        _add_missing_columns(self._db)
        self._closed = False
        self._directory = None if str(path) == ":memory:" else os.path.dirname(os.path.abspath(path))
        self.reserve = reserve
        self.listeners: list[Callable[[AuditEvent], None]] = []
        """Called with each event once stored (a cluster node copies them to its Redis stream)."""

    def free_bytes(self) -> int | None:
        """Bytes free for unprivileged writers on the log's file system (None: in memory)."""
        if self._directory is None:
            return None
        stat = os.statvfs(self._directory)
        return stat.f_bavail * stat.f_frsize

    def record(self, event: AuditEvent) -> AuditEvent:
        """Append ``event`` (stamped with the time now unless it has one); returns it as stored.

        Raises StorageError when the event cannot be stored, or the file system is within
        :attr:`reserve` of full."""
        if self._closed:
            raise ClosedError("audit log is closed")
        free = self.free_bytes()
        if free is not None and free < self.reserve:
            raise StorageError(
                f"audit event not stored: {free} bytes free, less than the {self.reserve} kept for policies"
            )
        time = event.time or datetime.now(UTC)
        values = [getattr(event, name) for name in _COLUMNS]
        values[_TIME] = time.isoformat()
        try:
            cursor = self._db.execute(_INSERT, values)
        except sqlite3.Error as exc:
            raise StorageError(f"audit event not stored: {exc}") from None
        stored = replace(event, time=time, id=cursor.lastrowid)
        for listener in self.listeners:
            listener(stored)
        return stored

    def events(
        self,
        *,
        room: str | None = None,
        participant: str | None = None,
        kind: EventKind | None = None,
        outcome: str | None = None,
        since: datetime | None = None,
        after_id: int | None = None,
        limit: int | None = None,
    ) -> list[AuditEvent]:
        """Events matching every filter given, oldest first.

        ``limit`` keeps the newest ``limit`` events, except with ``after_id``: then the *first*
        ``limit`` events after it, so that a console paging forward (``after_id`` = the last id it
        has) never skips an event however many arrived meanwhile.
        """
        if self._closed:
            raise ClosedError("audit log is closed")
        where: list[str] = []
        parameters: list[object] = []
        for column, value in (
            ("room", room),
            ("participant", participant),
            ("kind", kind),
            ("outcome", outcome),
        ):
            if value is not None:
                where.append(f"{column} = ?")
                parameters.append(str(value))
        if since is not None:
            where.append("time >= ?")
            parameters.append(since.astimezone(UTC).isoformat())
        if after_id is not None:
            where.append("id > ?")
            parameters.append(after_id)
        sql = f"SELECT id, {', '.join(_COLUMNS)} FROM audit"
        if where:
            sql += " WHERE " + " AND ".join(where)
        forward = after_id is not None
        sql += " ORDER BY id" if forward else " ORDER BY id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            parameters.append(limit)
        try:
            rows = self._db.execute(sql, parameters).fetchall()
        except sqlite3.Error as exc:
            raise StorageError(f"audit log not readable: {exc}") from None
        return [_from_row(row) for row in (rows if forward else reversed(rows))]

    def prune(self, before: datetime, *, batch: int = 1000) -> int:
        """Delete the oldest events recorded before ``before``, at most ``batch`` of them; returns how many.

        Events are appended in time order, so the old ones are the first rows: each call reads at most
        ``batch`` rows from the start of the table, whatever its size, and a caller on an event loop
        can prune a large backlog in short steps (call again while it returns ``batch``).
        """
        if self._closed:
            raise ClosedError("audit log is closed")
        try:
            rows = self._db.execute("SELECT id, time FROM audit ORDER BY id LIMIT ?", (batch,)).fetchall()
            old = list(itertools.takewhile(lambda row: datetime.fromisoformat(row[1]) < before, rows))
            if old:
                self._db.execute("DELETE FROM audit WHERE id <= ?", (old[-1][0],))
        except sqlite3.Error as exc:
            raise StorageError(f"audit log not pruned: {exc}") from None
        return len(old)

    def close(self) -> None:
        """Flush (checkpoint the write-ahead log into the file, synced) and close; safe to call twice."""
        if not self._closed:
            self._closed = True
            with contextlib.suppress(sqlite3.Error):  # e.g. a reader holds the log open: it stays valid
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._db.close()


def _add_missing_columns(db: sqlite3.Connection) -> None:
    """A log written by an older version lacks the newer columns (``actor``, ``count``): add them
    (their defaults apply)."""
    try:
        present = {row[1] for row in db.execute("PRAGMA table_info(audit)")}
        for name in _COLUMNS:
            if name not in present:
                db.execute(f"ALTER TABLE audit ADD COLUMN {name} {_INTEGERS.get(name, 'TEXT')}")
    except sqlite3.Error as exc:
        raise StorageError(f"cannot upgrade the audit log: {exc}") from None


def _from_row(row: tuple[object, ...]) -> AuditEvent:
    values = dict(zip(_COLUMNS, row[1:], strict=True))
    return AuditEvent(
        **{
            **values,
            "kind": EventKind(str(values["kind"])),
            "time": datetime.fromisoformat(str(values["time"])),
            "id": row[0],
        }  # type: ignore[arg-type]
    )
