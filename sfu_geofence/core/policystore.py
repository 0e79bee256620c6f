"""Policies in force: a server-wide default and per-room overrides, versioned and persisted.

Every change bumps one store-wide version counter and is committed before the call returns, so an
acknowledged change survives a restart and every decision can name the version it was made under.

:class:`PolicySource` is the seam between the geofence and where policies live: this module's SQLite
:class:`PolicyStore` (one process) or a shared store (``sfu_geofence.cluster``, many nodes). Either way
the geofence reads a local snapshot synchronously (admission stays one dictionary lookup) and hears of
every change, its own or another node's, through one listener, exactly once per version.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from .errors import ClosedError
from .policy import RoomPolicy
from .storage import StorageError, connect

_SCHEMA = """
CREATE TABLE IF NOT EXISTS room_policy (
    room TEXT PRIMARY KEY, policy TEXT NOT NULL, version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS default_policy (
    id INTEGER PRIMARY KEY CHECK (id = 1), policy TEXT NOT NULL, version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS counter (
    id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class PolicyInForce:
    """The policy that applies to a room, and since which version."""

    policy: RoomPolicy
    version: int
    """Store-wide version at which this policy was set."""
    inherited: bool
    """True when the room has no policy of its own and the server default applies."""


@dataclass(frozen=True, slots=True)
class PolicyUpdate:
    """What changed in a store, up to which version: the rooms to re-evaluate."""

    version: int
    """The store's version after the change (a catch-up may cover several versions)."""
    rooms: frozenset[str] = frozenset()
    """Rooms whose own policy was set, changed or removed."""
    default: bool = False
    """The server default changed (rooms without a policy of their own follow it)."""
    actor: str | None = None
    """Who made the change, as the operator said (None: not said, or a catch-up of several)."""
    reason: str | None = None
    """Why, as the operator said (None as for ``actor``)."""


PolicyListener = Callable[[PolicyUpdate], None]


class PolicySource(Protocol):
    """Where the geofence's policies live: read synchronously, changed asynchronously.

    Reads answer from a local snapshot. :meth:`write` returns once the change is durable in the store
    (what "acknowledged" means there) and the listener has been told of it; the listener hears every
    applied change exactly once and in version order, including changes made by other processes.
    """

    @property
    def version(self) -> int: ...
    @property
    def default(self) -> PolicyInForce: ...
    def get(self, room: str) -> PolicyInForce: ...
    def rooms(self) -> dict[str, PolicyInForce]: ...
    def listen(self, listener: PolicyListener) -> None:
        """Call ``listener`` after each change is applied to the snapshot (one listener: the geofence)."""
        ...

    async def write(
        self,
        room: str | None,
        policy: RoomPolicy | None,
        *,
        actor: str | None = None,
        reason: str | None = None,
    ) -> int:
        """Set ``room``'s policy (None: back to the default), or with ``room`` None the server default.
        Returns the new version. Raises StorageError when the change is not stored. ``actor`` and
        ``reason`` reach the listener with the change (on every node that hears of it one by one)."""
        ...

    async def ready(self) -> None:
        """Return once the snapshot is the newest the store can read now: at once when it knows it
        is (a shared store that is following changes); never raises, never waits unboundedly."""
        ...

    def close(self) -> None: ...


class PolicyStore:
    """Room policies, kept in SQLite (``path``) or in memory only (``:memory:``)."""

    def __init__(self, path: str | Path = ":memory:", *, default: RoomPolicy | None = None) -> None:
        """Open the store. ``default`` seeds the server default the first time only; later the
        persisted default wins, since an operator may have changed it since."""
        self._db = connect(path, _SCHEMA)
        self._closed = False
        row = self._db.execute("SELECT policy, version FROM default_policy").fetchone()
        if row is None:
            self._default = PolicyInForce(default or RoomPolicy(), 0, inherited=True)
            self._write("INSERT INTO default_policy VALUES (1, ?, 0)", (_dump(self._default.policy),))
        else:
            self._default = PolicyInForce(_load(row[0]), int(row[1]), inherited=True)
        self._rooms = {
            room: PolicyInForce(_load(text), int(version), inherited=False)
            for room, text, version in self._db.execute("SELECT room, policy, version FROM room_policy")
        }
        counter = self._db.execute("SELECT version FROM counter").fetchone()
        self._version = int(counter[0]) if counter else 0
        self._listener: PolicyListener | None = None

    def listen(self, listener: PolicyListener) -> None:
        self._listener = listener

    async def ready(self) -> None:
        """Always: nobody else changes this store."""

    async def write(
        self,
        room: str | None,
        policy: RoomPolicy | None,
        *,
        actor: str | None = None,
        reason: str | None = None,
    ) -> int:
        """:meth:`set` or :meth:`set_default`: a local commit, done before this returns."""
        if room is not None:
            return self.set(room, policy, actor=actor, reason=reason)
        if policy is None:
            raise ValueError("the server default cannot be removed, only replaced")
        return self.set_default(policy, actor=actor, reason=reason)

    @property
    def version(self) -> int:
        """The latest version handed out (0 before any change)."""
        return self._version

    @property
    def default(self) -> PolicyInForce:
        return self._default

    def get(self, room: str) -> PolicyInForce:
        """The policy in force in ``room``: its own, else the server default."""
        return self._rooms.get(room, self._default)

    def rooms(self) -> dict[str, PolicyInForce]:
        """Rooms that have a policy of their own."""
        return dict(self._rooms)

    def set(
        self, room: str, policy: RoomPolicy | None, *, actor: str | None = None, reason: str | None = None
    ) -> int:
        """Give ``room`` its own policy, or (None) return it to the default. Returns the new version.
        ``actor`` and ``reason`` are passed to the listener with the change."""
        version = self._version + 1
        if policy is None:
            self._write("DELETE FROM room_policy WHERE room = ?", (room,), version)
            self._rooms.pop(room, None)
        else:
            self._write(
                "INSERT OR REPLACE INTO room_policy VALUES (?, ?, ?)", (room, _dump(policy), version), version
            )
            self._rooms[room] = PolicyInForce(policy, version, inherited=False)
        self._changed(PolicyUpdate(version, rooms=frozenset({room}), actor=actor, reason=reason))
        return version

    def set_default(self, policy: RoomPolicy, *, actor: str | None = None, reason: str | None = None) -> int:
        """Replace the server default (rooms without a policy of their own). Returns the new version."""
        version = self._version + 1
        self._write("UPDATE default_policy SET policy = ?, version = ?", (_dump(policy), version), version)
        self._default = PolicyInForce(policy, version, inherited=True)
        self._changed(PolicyUpdate(version, default=True, actor=actor, reason=reason))
        return version

    def _changed(self, update: PolicyUpdate) -> None:
        if self._listener is not None:
            self._listener(update)

    def _write(self, sql: str, parameters: tuple[object, ...], version: int | None = None) -> None:
        if self._closed:
            raise ClosedError("policy store is closed")
        try:
            with self._db:  # one transaction: the change and the counter, or neither
                self._db.execute("BEGIN")
                self._db.execute(sql, parameters)
                if version is not None:
                    self._db.execute("INSERT OR REPLACE INTO counter VALUES (1, ?)", (version,))
        except sqlite3.Error as exc:
            raise StorageError(f"policy change not stored: {exc}") from None
        if version is not None:
            self._version = version

    def close(self) -> None:
        """Safe to call twice."""
        if not self._closed:
            self._closed = True
            self._db.close()


def _dump(policy: RoomPolicy) -> str:
    return json.dumps(policy.to_dict(), sort_keys=True)


def _load(text: str) -> RoomPolicy:
    return RoomPolicy.from_dict(json.loads(text))
