"""The geofence as a host SFU embeds it: admit, leave, media address in; eject requests out.

The contract (see docs/plugin.md):

* the host calls :meth:`Geofence.admit` once per participant session at signaling time, before it
  allocates anything, and refuses the participant when ``decision.admitted`` is false;
* the host calls :meth:`Geofence.media_address` when ICE selects (or changes) a candidate pair;
* the host calls :meth:`Geofence.leave` when a participant session ends, whatever the reason;
* the core calls the host's ``eject`` callable with an :class:`EjectRequest` when an admitted
  participant becomes restricted (policy change, database reload, restricted media address) or an
  operator ejects it by hand (:meth:`Geofence.eject_by_operator`). The host closes that participant
  only, and afterwards calls :meth:`Geofence.leave`.

Everything is synchronous and meant for one thread, the host's event loop; the eject callable must
not block (schedule the close, return). Only ids, strings and frozen values cross.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from .audit import AuditEvent, AuditLog, EventKind
from .auditrate import AuditRate, RefusalCounter
from .decision import Decision, Verdict
from .errors import DatabaseError, GeofenceError, ParticipantError
from .evaluator import Evaluator
from .geolocation import DatabaseInfo, Location, Locator, normalise_address
from .mediaaudit import MediaAuditLimit, MediaAudits, Report
from .outcome import DatabaseReload, Ejection, Outcome, PolicyEnacted
from .policy import RoomPolicy
from .policystore import PolicyInForce, PolicySource, PolicyStore, PolicyUpdate

logger = logging.getLogger(__name__)

_inet_pton = socket.inet_pton
#: A plain int: the IntEnum ``socket.AF_INET`` costs a conversion per call on the hot path.
_AF_INET = int(socket.AF_INET)


class Trigger(StrEnum):
    """What made an admitted participant restricted."""

    POLICY_CHANGED = "policy_changed"
    DATABASE_RELOADED = "database_reloaded"
    MEDIA_ADDRESS = "media_address"
    OPERATOR = "operator"
    """An operator removed the participant by hand (admin API), whatever the policy says."""


@dataclass(frozen=True, slots=True)
class EjectRequest:
    """The core asks the host to remove one participant session.

    The host closes exactly ``participant`` in ``room`` (nobody else's media may notice), tells that
    participant alone why (at most its own country), and then calls :meth:`Geofence.leave`. The
    decision carries the country: operator-only information, never to be shown to other participants.
    """

    room: str
    participant: str
    trigger: Trigger
    decision: Decision


EjectCallback = Callable[[EjectRequest], None]


@dataclass(frozen=True, slots=True)
class DatabaseAlarm:
    """The last database reload failed and the previous build still decides: for operators to act on."""

    message: str
    """Why, e.g. the file is corrupt or missing, and which build is kept."""
    since: datetime
    """When the reload failed (UTC)."""


@dataclass(frozen=True, slots=True)
class ParticipantView:
    """What the core knows of one admitted participant: for operators only."""

    room: str
    participant: str
    identity: str | None
    address: str
    decision: Decision
    """Latest decision on the signaling address."""
    media_address: str | None
    media_relayed: bool
    media_decision: Decision | None
    ejecting: bool
    """An ejection was requested and the host has not yet called leave()."""


class _Session:
    __slots__ = (
        "address",
        "decision",
        "eject_address",
        "eject_decision",
        "eject_reason",
        "ejecting",
        "identity",
        "media_address",
        "media_audits",
        "media_decision",
        "media_relayed",
        "participant",
        "room",
    )

    def __init__(
        self,
        room: str,
        participant: str,
        address: str,
        identity: str | None,
        decision: Decision,
        media_audits: MediaAudits,
    ) -> None:
        self.room = room
        self.participant = participant
        self.address = address
        self.identity = identity
        self.decision = decision
        self.media_address: str | None = None
        self.media_relayed = False
        self.media_decision: Decision | None = None
        self.media_audits = media_audits
        """Which media reports of this session the audit has, and those counted beyond."""
        self.eject_decision: Decision | None = None
        """The decision an ejection was requested for (the signaling or the media one)."""
        self.eject_address: str | None = None
        """The address that decision was made on."""
        self.ejecting = False
        self.eject_reason: str | None = None
        """Audited reason of a pending ejection when it is not the decision's (an operator's)."""

    def address_of(self, decision: Decision) -> str:
        """The address ``decision`` was made on: an audit row pairs a country with its own address."""
        if decision is self.media_decision and self.media_address is not None:
            return self.media_address
        return self.address

    def view(self) -> ParticipantView:
        return ParticipantView(
            self.room,
            self.participant,
            self.identity,
            self.address,
            self.decision,
            self.media_address,
            self.media_relayed,
            self.media_decision,
            self.ejecting,
        )


class Geofence:
    """Decides who may be in which room, by country, and asks the host to eject who no longer may."""

    def __init__(
        self,
        eject: EjectCallback,
        *,
        database: str | Path | None = None,
        locator: Locator | None = None,
        policies: PolicySource | None = None,
        audit: AuditLog | None = None,
        audit_rate: AuditRate | None = None,
        media_audit: MediaAuditLimit | None = None,
    ) -> None:
        """Start deciding. Without ``locator``, open ``database`` (None: the embedded DB-IP file);
        a missing or corrupt file raises DatabaseError here, at start-up. Without ``policies`` or
        ``audit``, in-memory ones are used (nothing survives a restart). Objects passed in are
        closed by :meth:`close` all the same: the geofence owns them from now on. Every change the
        policy store applies, whoever made it (another node of a cluster too), is enforced here.
        Refusals beyond ``audit_rate`` are counted in summary rows instead of one row each, and so
        are a session's media reports beyond ``media_audit``."""
        self._eject = eject
        self._locator = locator or Locator(database)
        self._policies: PolicySource = policies or PolicyStore()
        self._audit = audit or AuditLog()
        self._sessions: dict[tuple[str, str], _Session] = {}
        self._closed = False
        self._writing = 0
        """Policy writes of this geofence under way (see :meth:`_write_policy`)."""
        self._enacted: dict[int, tuple[Ejection, ...]] = {}
        """What each policy version enacted here, kept only while a write is under way."""
        self._audit_failures = 0
        self._database_alarm: DatabaseAlarm | None = None
        self._refusals = RefusalCounter(audit_rate or AuditRate())
        self._media_audit = media_audit or MediaAuditLimit()
        self._rebuild_evaluators()
        self._database_loaded()
        self._policies.listen(self._policies_changed)

    # -- what operators read -------------------------------------------------------------------

    @property
    def database(self) -> DatabaseInfo:
        """The database build now deciding."""
        return self._locator.database

    @property
    def database_alarm(self) -> DatabaseAlarm | None:
        """Set when the last reload (by an operator or a file watch) failed; cleared by one that works."""
        return self._database_alarm

    @property
    def audit(self) -> AuditLog:
        """The operator-only event log."""
        return self._audit

    @property
    def audit_failures(self) -> int:
        """Audit events that could not be written since start-up (each is logged as an error).

        Enforcement does not depend on the audit: a decision is acted on whether or not its event
        was stored, so a non-zero count means the log is missing events, never that someone was
        let in or kept in because of it.
        """
        return self._audit_failures

    @property
    def refusals_counted(self) -> int:
        """Refusals counted in summary rows rather than recorded one by one (the audit's rate limit)."""
        return self._refusals.suppressed

    @property
    def policies(self) -> PolicySource:
        return self._policies

    def policy(self, room: str) -> PolicyInForce:
        """The policy in force in ``room``."""
        return self._policies.get(room)

    def participants(self, room: str | None = None) -> list[ParticipantView]:
        """Admitted participants (of ``room``, or all), in order of admission."""
        return [s.view() for s in self._sessions.values() if room is None or s.room == room]

    # -- what the host calls ---------------------------------------------------------------------

    def decide(self, room: str, address: str, identity: str | None = None) -> Decision:
        """The decision for ``address`` in ``room``, with no side effect (no registration, no audit).

        The hot path of admission: for a dotted quad (``inet_pton`` reads no other form, so no
        inet_aton form such as ``010.1.1.1`` gets past it) whose DB-IP record's country this policy
        version already decided for anyone, one raw lookup and two dictionary lookups, in this one
        frame. Anything else (IPv6, an unknown address, a GeoIP2 record, a first meeting, a refusal
        an exemption may lift, a corrupt record) takes :meth:`_decide`, which answers the same.
        Raises InvalidAddress for text that is not an IP address.
        """
        evaluator = self._evaluators.get(room, self._default)
        try:
            _inet_pton(_AF_INET, address)
            return evaluator.by_code[self._lookup(address)["country_code"]]
        except (OSError, ValueError, TypeError, LookupError, RuntimeError):
            # RuntimeError: maxminddb's InvalidDatabaseError, which the careful path reports.
            return self._decide(evaluator, address, identity)

    def _decide(self, evaluator: Evaluator, address: str, identity: str | None) -> Decision:
        """:meth:`decide` through the Locator, for every address (the careful path)."""
        try:
            location = self._locator.locate(address)
        except DatabaseError as exc:
            logger.error("%s", exc)
            return evaluator.lookup_failed(self._locator.unknown)
        try:
            return evaluator.shared[location.key]
        except KeyError:  # first met under this policy version, or a refusal an exemption may lift
            return evaluator.decide(location, address, identity)

    async def ready(self) -> None:
        """Awaited by a host that can, before :meth:`admit`: a node of a cluster that lost track of
        changes (its subscription dropped) re-reads the policies first, so it admits nobody under
        a policy older than the newest it can read. Returns at once otherwise; never raises."""
        await self._policies.ready()

    def admit(self, room: str, participant: str, address: str, identity: str | None = None) -> Decision:
        """Called once per participant session at signaling time, before the host allocates anything.

        When ``decision.admitted`` the participant is registered until :meth:`leave`; otherwise the
        host refuses it. Either way the decision is audited. ``identity`` is what the host vouches
        for (e.g. a token's subject), used for exemptions. Raises InvalidAddress (audited too) and
        ParticipantError when ``participant`` is already admitted in ``room``.
        """
        self._check_open()
        if (room, participant) in self._sessions:
            raise ParticipantError(f"participant {participant!r} is already admitted in room {room!r}")
        try:
            normalised = normalise_address(address)
            decision = self.decide(room, normalised, identity)
        except GeofenceError as exc:
            self._record(EventKind.ADMISSION, Outcome.ERROR, room, participant, address, detail=str(exc))
            raise
        if decision.admitted:
            self._sessions[(room, participant)] = _Session(
                room, participant, normalised, identity, decision, MediaAudits(self._media_audit)
            )
        self._record(
            EventKind.ADMISSION,
            decision.outcome,
            room,
            participant,
            normalised,
            decision,
            refusal=decision.verdict is not Verdict.ADMIT,
        )
        return decision

    def media_address(self, room: str, participant: str, address: str, relayed: bool) -> Decision:
        """Called when ICE selects (or changes) the participant's candidate pair.

        ``address`` is the remote address of the selected pair; ``relayed`` says the participant's
        media comes through a TURN relay (its address then is the relay's). A restricted media address
        makes the core request an ejection; the decision is returned either way, every call is
        decided, and an ejection the host failed to take is asked again. The audit is bounded per
        session (:mod:`.mediaaudit`): an (address, relayed, decision) already audited for the
        session (a new port, or back to an earlier address) is not audited again, and beyond a few
        distinct ones they are counted in summary rows.
        """
        self._check_open()
        session = self._sessions.get((room, participant))
        if session is None:
            raise ParticipantError(f"participant {participant!r} is not admitted in room {room!r}")
        normalised = normalise_address(address)
        session.media_address, session.media_relayed = normalised, relayed
        session.media_decision = self._decide_media(session)
        decision = session.media_decision
        self._write_media_summaries(session)
        report = session.media_audits.report((normalised, relayed, decision))
        if report is Report.NEW:
            self._record(
                EventKind.MEDIA,
                decision.outcome,
                room,
                participant,
                normalised,
                decision,
                detail=_relayed(relayed),
            )
            self._act(session, decision, Trigger.MEDIA_ADDRESS)
        elif not decision.admitted:
            # Already audited or beyond the audit's limit, and restricted: eject at once (its
            # "requested" row names the address), or again when the host failed to take the last
            # request (eject_failed). A monitor-mode would_eject comes with the entry's own row only.
            self._act(session, decision, Trigger.MEDIA_ADDRESS)
        return decision

    def leave(self, room: str, participant: str) -> None:
        """Called when a participant session ends, for whatever reason; also the answer to an eject
        request. Unknown (never admitted, or already left) participants are ignored."""
        session = self._sessions.pop((room, participant), None)
        if session is not None:
            self._write_media_summaries(session, force=True)
        if session is not None and session.ejecting:
            decision = session.eject_decision or session.decision
            self._record(
                EventKind.EJECTION,
                Outcome.COMPLETED,
                room,
                participant,
                session.eject_address or session.address,
                decision,
                reason=session.eject_reason,
            )

    # -- what operators change -------------------------------------------------------------------

    def eject_by_operator(
        self, room: str, participant: str, reason: str, *, actor: str | None = None
    ) -> bool:
        """An operator removes one participant by hand, whatever the policy (monitor mode too).

        Audited like every ejection (``requested`` now, ``completed`` at :meth:`leave`), then asked of
        the host through the same ``eject`` callable, with ``Trigger.OPERATOR``: one path out, so the
        host closes an operator's ejection exactly as a policy's. Returns False when the host's
        callable failed (audited as ``eject_failed``). Raises ParticipantError for a participant not
        admitted in ``room``, or one whose ejection is already pending. ``actor`` (who did it) is audited.
        """
        self._check_open()
        session = self._sessions.get((room, participant))
        if session is None:
            raise ParticipantError(f"participant {participant!r} is not admitted in room {room!r}")
        if session.ejecting:
            raise ParticipantError(f"the ejection of participant {participant!r} is already pending")
        return self._request_ejection(
            session,
            session.decision,
            Trigger.OPERATOR,
            f"{Trigger.OPERATOR}: {reason}",
            str(Trigger.OPERATOR),
            actor,
        )

    def set_policy(
        self, room: str, policy: RoomPolicy | None, *, actor: str | None = None, reason: str | None = None
    ) -> int:
        """Give ``room`` its own policy (None: back to the default), persisted before returning;
        current participants of the room are re-evaluated. Returns the new policy version. Who made
        the change and why (``actor``, ``reason``: what the operator says) go into the audit.

        Synchronous, so only with a local :class:`PolicyStore`; :meth:`change_policy` works with any.
        """
        return self._local_store().set(room, policy, actor=actor, reason=reason)

    def set_default_policy(
        self, policy: RoomPolicy, *, actor: str | None = None, reason: str | None = None
    ) -> int:
        """Replace the server default; participants of rooms without a policy of their own are
        re-evaluated. Returns the new policy version. ``actor`` and ``reason`` are audited. Local
        store only, as :meth:`set_policy`."""
        return self._local_store().set_default(policy, actor=actor, reason=reason)

    async def change_policy(
        self, room: str, policy: RoomPolicy | None, *, actor: str | None = None, reason: str | None = None
    ) -> PolicyEnacted:
        """:meth:`set_policy` with any policy store: returns once the store acknowledged the change
        and this geofence enforced it (raises StorageError when the store did not take it), with
        the version and who it ejected or would have. ``actor`` and ``reason`` are audited, on
        every node that hears of the change with them."""
        return await self._write_policy(room, policy, actor, reason)

    async def change_default_policy(
        self, policy: RoomPolicy, *, actor: str | None = None, reason: str | None = None
    ) -> PolicyEnacted:
        """:meth:`set_default_policy` with any policy store, as :meth:`change_policy`."""
        return await self._write_policy(None, policy, actor, reason)

    def reload_database(
        self, path: str | Path | None = None, *, actor: str | None = None, reason: str | None = None
    ) -> DatabaseReload:
        """Swap to the database at ``path`` (None: re-read the current file) and re-evaluate everyone.

        A missing or corrupt file raises DatabaseError, is audited, raises :attr:`database_alarm`,
        and the current database stays. ``actor`` and ``reason`` are audited either way. Returns
        the database now in use and who the reload ejected or would have.
        """
        self._check_open()
        try:
            self._locator.reload(path)
        except DatabaseError as exc:
            logger.error("database reload failed, keeping %s: %s", self.database.label, exc)
            detail = f"{exc}; kept {self.database.label}"
            self._record(EventKind.DATABASE, Outcome.RELOAD_FAILED, detail=detail, actor=actor, reason=reason)
            self._database_alarm = DatabaseAlarm(
                f"{exc}; still using {self.database.label}", datetime.now(UTC)
            )
            raise
        self._database_alarm = None
        self._rebuild_evaluators()
        self._database_loaded(actor, reason)
        ejections = self._reevaluate(list(self._sessions.values()), Trigger.DATABASE_RELOADED)
        return DatabaseReload(ejections, self.database)

    def close(self) -> None:
        """Close the database, policy store and audit log (after writing the refusals still counted).
        Safe to call twice."""
        if not self._closed:
            self._write_summaries(force=True)
            for session in self._sessions.values():
                self._write_media_summaries(session, force=True)
            self._closed = True
            self._locator.close()
            self._policies.close()
            self._audit.close()

    # -- inside ----------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise GeofenceError("the geofence is closed")

    def _local_store(self) -> PolicyStore:
        self._check_open()
        if not isinstance(self._policies, PolicyStore):
            raise GeofenceError("policies live in a shared store: change them with change_policy()")
        return self._policies

    async def _write_policy(
        self, room: str | None, policy: RoomPolicy | None, actor: str | None, reason: str | None
    ) -> PolicyEnacted:
        """Write through the store, then say what this geofence did when it heard of the change.

        The store tells :meth:`_policies_changed` before ``write`` returns; what it enacted is kept
        by version only while a write of this geofence is under way (other nodes' changes are not
        kept), and a catch-up that covered this change answers for it, with the ejections in this
        change's room (or, for the default, in rooms without a policy of their own).
        """
        self._check_open()
        self._writing += 1
        try:
            version = await self._policies.write(room, policy, actor=actor, reason=reason)
        finally:
            self._writing -= 1
        covering = min((v for v in self._enacted if v >= version), default=None)
        ejections = self._enacted[covering] if covering is not None else ()
        # A catch-up may have applied this change with others (concurrent writes): name only the
        # ejections this change is answerable for.
        if room is not None:
            ejections = tuple(e for e in ejections if e.room == room)
        else:
            ejections = tuple(e for e in ejections if e.room not in self._evaluators)
        if not self._writing:
            self._enacted.clear()
        return PolicyEnacted(ejections, version)

    def _policies_changed(self, update: PolicyUpdate) -> None:
        """The store applied a change (this process's or another's): audit it, enforce it."""
        if self._closed:
            return
        self._rebuild_evaluators()
        version, actor, reason = update.version, update.actor, update.reason
        for room in sorted(update.rooms):
            rule = self.policy(room).policy.describe()
            self._record(
                EventKind.POLICY,
                Outcome.CHANGED,
                room,
                rule=rule,
                version=version,
                actor=actor,
                reason=reason,
            )
        if update.default:
            rule = self._policies.default.policy.describe()
            self._record(
                EventKind.POLICY,
                Outcome.DEFAULT_CHANGED,
                rule=rule,
                version=version,
                actor=actor,
                reason=reason,
            )
        ejections = self._reevaluate(
            [
                s
                for s in self._sessions.values()
                if s.room in update.rooms or (update.default and s.room not in self._evaluators)
            ],
            Trigger.POLICY_CHANGED,
        )
        if self._writing:
            self._enacted[update.version] = ejections

    def _rebuild_evaluators(self) -> None:
        # With the evaluators (whose ``by_code`` holds for one build), the build's raw lookup.
        self._lookup: Callable[[str], Any] = self._locator.reader.get
        default = self._policies.default
        self._default = Evaluator(default.policy, default.version)
        self._evaluators = {
            room: Evaluator(p.policy, p.version) for room, p in self._policies.rooms().items()
        }

    def _database_loaded(self, actor: str | None = None, reason: str | None = None) -> None:
        info = self.database
        warning = info.staleness_warning()
        if warning:
            logger.warning("%s", warning)
        detail = warning or info.path
        self._record(
            EventKind.DATABASE, Outcome.LOADED, database=info.label, detail=detail, actor=actor, reason=reason
        )

    def _decide_media(self, session: _Session) -> Decision:
        assert session.media_address is not None
        if not session.media_relayed:
            return self.decide(session.room, session.media_address, session.identity)
        evaluator = self._evaluators.get(session.room, self._default)
        return evaluator.decide_relayed(
            self._locate(session.media_address),
            session.media_address,
            self._locate(session.address),
            session.address,
            session.identity,
        )

    def _locate(self, address: str) -> Location:
        try:
            return self._locator.locate(address)
        except DatabaseError as exc:
            logger.error("%s", exc)
            return self._locator.unknown

    def _reevaluate(self, sessions: list[_Session], trigger: Trigger) -> tuple[Ejection, ...]:
        """Decide again for ``sessions`` and act; returns who that ejected or would have."""
        ejections = []
        for session in sessions:
            if (session.room, session.participant) not in self._sessions:
                continue  # left meanwhile (an eject callable may call leave() at once)
            session.decision = self.decide(session.room, session.address, session.identity)
            decision = session.decision
            if session.media_address is not None:
                session.media_decision = self._decide_media(session)
                if decision.verdict is Verdict.ADMIT:
                    decision = session.media_decision
            outcome = self._act(session, decision, trigger)
            if outcome is not None:
                ejections.append(Ejection(session.room, session.participant, outcome, decision.country))
        return tuple(ejections)

    def _act(self, session: _Session, decision: Decision, trigger: Trigger) -> Outcome | None:
        """Eject (or, in monitor mode, audit who would be) a participant ``decision`` restricts;
        returns what was done, None when nothing was (admitted, or an ejection already pending)."""
        if decision.verdict is Verdict.ADMIT or session.ejecting:
            return None
        room, participant = session.room, session.participant
        if not decision.enforced:
            self._record(
                EventKind.EJECTION,
                Outcome.WOULD_EJECT,
                room,
                participant,
                session.address_of(decision),
                decision,
                trigger,
            )
            return Outcome.WOULD_EJECT
        taken = self._request_ejection(session, decision, trigger, str(trigger))
        return Outcome.REQUESTED if taken else Outcome.EJECT_FAILED

    def _request_ejection(
        self,
        session: _Session,
        decision: Decision,
        trigger: Trigger,
        detail: str,
        reason: str | None = None,
        actor: str | None = None,
    ) -> bool:
        room, participant = session.room, session.participant
        session.ejecting, session.eject_reason, session.eject_decision = True, reason, decision
        session.eject_address = address = session.address_of(decision)
        # Audited before the host is asked (it may call leave(), auditing "completed", from inside
        # the callable); _record cannot fail, so the request below never depends on the audit.
        self._record(
            EventKind.EJECTION,
            Outcome.REQUESTED,
            room,
            participant,
            address,
            decision,
            detail,
            reason=reason,
            actor=actor,
        )
        try:
            self._eject(EjectRequest(room, participant, trigger, decision))
        except Exception as exc:
            # The host failed to take the request: keep the participant, say so, retry at the next
            # re-evaluation or media report of a restricted address (even the same one).
            logger.exception("eject callable failed for %s in %s", participant, room)
            session.ejecting, session.eject_reason, session.eject_decision = False, None, None
            self._record(
                EventKind.EJECTION,
                Outcome.EJECT_FAILED,
                room,
                participant,
                address,
                decision,
                repr(exc),
                reason=reason,
            )
            return False
        return True

    def _record(
        self,
        kind: EventKind,
        outcome: Outcome,
        room: str | None = None,
        participant: str | None = None,
        address: str | None = None,
        decision: Decision | None = None,
        detail: str | None = None,
        *,
        rule: str | None = None,
        version: int | None = None,
        database: str | None = None,
        reason: str | None = None,
        actor: str | None = None,
        refusal: bool = False,
    ) -> None:
        """Audit best-effort: enforcement never fails because the audit's storage does.

        A write that fails is logged and counted (:attr:`Geofence.audit_failures`); the caller goes
        on acting on its decision, so a full disk cannot keep a restricted participant in a room or
        leave a refused one registered. A ``refusal`` beyond the audit rate is counted instead
        (:mod:`.auditrate`).
        """
        event = AuditEvent(
            kind=kind,
            outcome=outcome,
            room=room,
            participant=participant,
            address=address,
            country=decision.country if decision else None,
            source=decision.source if decision else None,
            database=decision.database if decision else database,
            rule=decision.rule if decision else rule,
            reason=reason or (str(decision.reason) if decision else None),
            actor=actor,
            policy_version=decision.policy_version if decision else version,
            detail=detail,
        )
        self._write_summaries()
        if refusal and not self._refusals.record_one():
            self._refusals.count(event)
            return
        self._write(event)

    def _write_summaries(self, *, force: bool = False) -> None:
        for summary in self._refusals.summaries(force=force):
            self._write(summary)

    def _write_media_summaries(self, session: _Session, *, force: bool = False) -> None:
        audits = session.media_audits
        for key, n in audits.due(force=force):
            decision = key if isinstance(key, Decision) else None
            self._write(
                AuditEvent(
                    kind=EventKind.MEDIA,
                    outcome=key if isinstance(key, str) else key.outcome,
                    room=session.room,
                    participant=session.participant,
                    country=decision.country if decision else None,
                    source=decision.source if decision else None,
                    database=decision.database if decision else None,
                    rule=decision.rule if decision else None,
                    reason=str(decision.reason) if decision else None,
                    policy_version=decision.policy_version if decision else None,
                    detail=audits.detail(),
                    count=n,
                )
            )

    def _write(self, event: AuditEvent) -> None:
        kind, outcome, room, participant = event.kind, event.outcome, event.room, event.participant
        try:
            self._audit.record(event)
        except GeofenceError as exc:  # StorageError (disk full, read-only...), or the log closed
            self._audit_failures += 1
            logger.error(
                "audit event not recorded (%d so far): %s %s room=%s participant=%s: %s",
                self._audit_failures,
                kind,
                outcome,
                room,
                participant,
                exc,
            )


def _relayed(relayed: bool) -> str:
    return "relayed (TURN)" if relayed else "direct"
