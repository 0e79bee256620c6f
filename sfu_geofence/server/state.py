"""Where the server keeps what must outlive it: room policies and the audit log (``--state-dir``).

Policies are committed with ``synchronous=FULL`` (the core's only setting for them): an operator's
acknowledged change survives even a power cut, and changes are rare. The audit log takes one commit
per admission on the event loop that also forwards everyone's media, so the server writes it with
``synchronous=NORMAL`` in WAL mode by default: a commit then survives the process being killed
(``kill -9``, a crash), not a power cut of the machine, and costs tens of microseconds instead of an
fsync (0.2-3.6 ms measured). Operators who need the audit to survive power cuts choose ``FULL``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..core.audit import DEFAULT_RESERVE, AuditLog
from ..core.policy import RoomPolicy
from ..core.policystore import PolicyStore
from ..core.storage import Synchronous

POLICIES_FILE = "policies.sqlite"
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")
AUDIT_FILE = "audit.sqlite"


@dataclass(frozen=True, slots=True)
class StateConfig:
    """``--state-dir`` and how hard the audit log syncs. Without a directory nothing is kept."""

    directory: Path | None = None
    """Holds ``policies.sqlite`` and ``audit.sqlite`` (created if missing); None: in memory only."""
    audit_synchronous: Synchronous = "NORMAL"
    audit_retention_days: float | None = None
    """Audit events older than this many days are deleted (``--audit-retention``); None: kept for ever."""
    audit_reserve: int = DEFAULT_RESERVE
    """Free bytes the audit log leaves on the state directory's file system for policy changes."""

    def __post_init__(self) -> None:
        if self.audit_retention_days is not None and not self.audit_retention_days > 0:
            raise ValueError(
                f"the audit retention must be a positive number of days: {self.audit_retention_days}"
            )
        if self.audit_synchronous not in ("FULL", "NORMAL"):
            raise ValueError(f"audit_synchronous must be FULL or NORMAL, not {self.audit_synchronous!r}")
        if self.directory is not None:
            object.__setattr__(self, "directory", Path(self.directory))

    @property
    def policies_path(self) -> Path | None:
        return self.directory / POLICIES_FILE if self.directory else None

    @property
    def audit_path(self) -> Path | None:
        return self.directory / AUDIT_FILE if self.directory else None

    def open_policies(self, default: RoomPolicy | None = None) -> PolicyStore:
        """The policy store (``default`` seeds the server default on first start only)."""
        self._make_private(self.policies_path)
        return PolicyStore(self.policies_path or ":memory:", default=default)

    def open_audit(self) -> AuditLog:
        self._make_private(self.audit_path)
        return AuditLog(
            self.audit_path or ":memory:", synchronous=self.audit_synchronous, reserve=self.audit_reserve
        )

    def _make_private(self, database: Path | None) -> None:
        """The directory 0700 and ``database`` (and its journals) 0600, whoever made them and when.

        The audit holds participants' addresses and countries: operators only. ``mkdir(mode=...)``
        leaves an existing directory as it was, and SQLite creates files by the umask (often 0644);
        it gives its -wal and -shm files the database file's mode, so that is set before it opens it.
        """
        if self.directory is None or database is None:
            return
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.directory, 0o700)
        os.close(os.open(database, os.O_CREAT | os.O_RDONLY, 0o600))
        for path in (database, *(database.with_name(database.name + s) for s in SQLITE_SIDE_FILES)):
            if path.exists():
                os.chmod(path, 0o600)
