"""The SFU as the geofence's host: admission before allocation, ejection of one participant, media paths.

:class:`GeofenceHost` is the glue docs/plugin.md asks of a host, and nothing more:

* it is the SFU's admission hook: :meth:`Geofence.admit` runs before the SFU allocates anything, and a
  refusal names the country detected for *that* participant, to that participant only;
* it is the geofence's ``eject`` callable: it schedules :meth:`Sfu.remove_participant` with
  ``CloseReason.EJECTED`` and the participant's own reason, and returns at once;
* it is an :class:`SfuObserver`: every participant that leaves, whatever the reason, is
  :meth:`Geofence.leave`-d, and every selected ICE pair is reported with :meth:`Geofence.media_address`
  (relayed only when its remote address is a declared TURN relay's,
  whatever the candidate's ``typ``: see :mod:`sfu_geofence.rtc.ice`).

The room never learns why someone left: the SFU tells the others a neutral ``participant-left``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from ..core.audit import AuditLog
from ..core.countries import country_name
from ..core.decision import Decision, DecisionReason
from ..core.errors import GeofenceError, InvalidAddress, ParticipantError
from ..core.geofence import EjectRequest, Geofence, Trigger
from ..core.geolocation import Locator
from ..core.policystore import PolicySource
from ..rtc.ice import SelectedPair
from ..sfu import CloseReason, JoinRequest, Participant, Refusal, Sfu, SfuObserver

logger = logging.getLogger(__name__)


class GeofenceHost(SfuObserver):
    """Makes ``sfu`` enforce a :class:`Geofence` it creates (and owns: :meth:`close` closes it).

    Installs itself as the SFU's admission hook and as one of its observers; the SFU must have no
    other admission hook.
    """

    def __init__(
        self,
        sfu: Sfu,
        *,
        database: str | Path | None = None,
        locator: Locator | None = None,
        policies: PolicySource | None = None,
        audit: AuditLog | None = None,
    ) -> None:
        if sfu.admission is not None:
            raise ValueError("the SFU already has an admission hook; the geofence must be the only one")
        self.sfu = sfu
        self.geofence = Geofence(
            self._eject, database=database, locator=locator, policies=policies, audit=audit
        )
        sfu.admission = self.admit
        sfu.admission_ready = self.geofence.ready
        sfu.observer.observers.append(self)
        self.ejections: dict[Trigger, int] = dict.fromkeys(Trigger, 0)
        """Ejections requested since start-up, by trigger (for the metrics)."""
        self.observe_decision: Callable[[float], None] = _ignore
        """Told how many seconds each admission decision took (the metrics' histogram)."""
        self.observe_ejection: Callable[[float], None] = _ignore
        """Told how many seconds each ejection took, from request to media stopped and participant told
        (its peer connection's teardown is paced afterwards: see ``Participant.close``)."""

    def close(self) -> None:
        """Close the geofence (its database, policy store and audit log). Safe to call twice."""
        self.geofence.close()

    # -- the SFU's admission hook ------------------------------------------------------------------

    def admit(self, request: JoinRequest) -> Refusal | None:
        """Once per join, before the SFU allocates anything: None admits, a Refusal refuses.

        When the geofence cannot decide, the refusal is ``internal``: the client sees an internal error.
        """
        started = time.perf_counter()
        try:
            decision = self.geofence.admit(
                request.room, request.participant_id, request.address, request.identity
            )
            self.observe_decision(time.perf_counter() - started)
        except InvalidAddress:
            return Refusal(
                "Your network address could not be read, so this meeting cannot admit you.",
                code="invalid_address",
            )
        except GeofenceError as exc:
            # The server failed (the geofence closed under a shutdown, a store error): nobody's country
            # was refused, so this must not look like a refusal by policy (4403): an internal refusal
            # closes the session as an internal error (4500); the geofence has audited what it could,
            # the log says why.
            logger.error("admission of %s in %s failed: %s", request.participant_id, request.room, exc)
            return Refusal("The server cannot admit anyone right now.", internal=True, code="internal_error")
        if decision.admitted:
            return None
        logger.debug("refused %s in %s: %s", request.participant_id, request.room, decision.reason)
        return Refusal(refusal_reason(decision), code=str(decision.reason))

    # -- the geofence's eject callable ---------------------------------------------------------------

    def _eject(self, request: EjectRequest) -> None:
        # Never close from inside the geofence's call (a policy change, an ICE callback): schedule it.
        asyncio.get_running_loop().call_soon(self._remove, request, time.perf_counter())
        self.ejections[request.trigger] += 1

    def _remove(self, request: EjectRequest, requested: float) -> None:
        logger.info("ejecting %s from %s (%s)", request.participant, request.room, request.trigger)
        removed = self.sfu.remove_participant(
            request.participant, CloseReason.EJECTED, ejection_reason(request)
        )
        if removed:  # its media stopped and it was told; its connection's teardown is paced, after
            self.observe_ejection(time.perf_counter() - requested)
        if not removed:  # it left meanwhile; participant_left has already answered with leave()
            self.geofence.leave(request.room, request.participant)

    # -- SfuObserver -------------------------------------------------------------------------------

    def participant_left(self, participant: Participant, reason: CloseReason, detail: str) -> None:
        self.geofence.leave(participant.room_name, participant.id)

    def join_abandoned(self, request: JoinRequest) -> None:
        self.geofence.leave(request.room, request.participant_id)

    def selected_pair_changed(self, participant: Participant, pair: SelectedPair) -> None:
        try:
            self.geofence.media_address(
                participant.room_name, participant.id, pair.remote_address[0], pair.relayed
            )
        except ParticipantError:
            pass  # ejected or left while ICE was still working
        except GeofenceError:
            logger.exception("media address of %s could not be checked", participant.id)

    # -- ParticipantControl, for the operator API --------------------------------------------------

    def display_names(self, room: str) -> Mapping[str, str]:
        found = self.sfu.rooms.get(room)
        return {} if found is None else {pid: p.name for pid, p in found.participants.items()}


def _ignore(seconds: float) -> None:
    pass


def _place(decision: Decision) -> str:
    if decision.country is None:
        return "an unknown location (your country could not be determined)"
    return f"{country_name(decision.country)} ({decision.country})"


def refusal_reason(decision: Decision) -> str:
    """What a refused participant is told: the country detected for it, and nothing about anyone else."""
    if decision.reason is DecisionReason.RELAYED_REFUSED:
        return "This meeting does not accept media relayed through a TURN server."
    return f"This meeting is not accessible from {_place(decision)}."


def ejection_reason(request: EjectRequest) -> str:
    """What an ejected participant is told (it alone): why, with its own country."""
    decision = request.decision
    if request.trigger is Trigger.OPERATOR:
        return "An operator removed you from this meeting."
    if decision.reason is DecisionReason.RELAYED_REFUSED:
        return "You were removed: this meeting no longer accepts media relayed through a TURN server."
    if request.trigger is Trigger.MEDIA_ADDRESS:
        place = _place(decision)
        return f"You were removed: your media comes from {place}, where this meeting is not accessible."
    return f"You were removed: this meeting is no longer accessible from {_place(decision)}."
