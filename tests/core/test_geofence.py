"""The facade a host calls: admission, media addresses, leaving, live changes, reloads, audit."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sfu_geofence import (
    AuditLog,
    DatabaseError,
    DecisionReason,
    EjectRequest,
    Enforcement,
    EventKind,
    Geofence,
    InvalidAddress,
    Mode,
    ParticipantError,
    PolicyStore,
    RelayedRule,
    RoomPolicy,
    Trigger,
    UnknownRule,
    Verdict,
)
from sfu_geofence.core.geolocation import Location, Locator
from sfu_geofence.core.mediaaudit import MediaAuditLimit
from sfu_geofence.core.outcome import Outcome
from sfu_geofence.testing.testdb import build_database

CN, HK, DE, US, UNKNOWN = "127.86.0.1", "127.85.0.1", "127.49.0.1", "127.1.0.1", "127.99.0.1"


class Host:
    """Records eject requests; answers each with leave() when told to."""

    def __init__(self) -> None:
        self.requests: list[EjectRequest] = []
        self.fence: Geofence

    def eject(self, request: EjectRequest) -> None:
        self.requests.append(request)

    def ejected(self) -> list[tuple[str, str]]:
        return [(r.participant, r.trigger) for r in self.requests]


@pytest.fixture
def host(loopback_db: Path) -> Iterator[Host]:
    host = Host()
    host.fence = Geofence(host.eject, database=loopback_db)
    yield host
    host.fence.close()


def outcomes(fence: Geofence, kind: EventKind) -> list[tuple[str | None, str]]:
    return [(e.participant, e.outcome) for e in fence.audit.events(kind=kind)]


def test_admission_registers_the_admitted_and_audits_everyone(host: Host) -> None:
    fence = host.fence
    fence.set_policy("r", RoomPolicy.deny("CN"))
    refused = fence.admit("r", "p1", CN)
    assert (refused.verdict, refused.reason, refused.country, refused.admitted) == (
        Verdict.REFUSE,
        DecisionReason.COUNTRY_DENIED,
        "CN",
        False,
    )
    assert fence.admit("r", "p2", "::ffff:" + HK).admitted
    assert [(p.participant, p.address, p.decision.country) for p in fence.participants()] == [
        ("p2", HK, "HK")
    ]
    events = fence.audit.events(kind=EventKind.ADMISSION)
    assert [(e.participant, e.address, e.country, e.outcome, e.rule, e.policy_version) for e in events] == [
        ("p1", CN, "CN", "refused", fence.policy("r").policy.describe(), 1),
        ("p2", HK, "HK", "admitted", fence.policy("r").policy.describe(), 1),
    ]
    assert events[0].database == fence.database.label


def test_a_bad_address_is_refused_with_a_specific_error_and_audited(host: Host) -> None:
    with pytest.raises(InvalidAddress):
        host.fence.admit("r", "p1", "not-an-address")
    assert outcomes(host.fence, EventKind.ADMISSION) == [("p1", "error")]
    assert host.fence.participants() == []


def test_a_participant_id_is_admitted_once_until_it_leaves(host: Host) -> None:
    host.fence.admit("r", "p1", DE)
    with pytest.raises(ParticipantError):
        host.fence.admit("r", "p1", DE)
    host.fence.leave("r", "p1")
    host.fence.leave("r", "p1")  # leaving twice, or never admitted: ignored
    host.fence.leave("r", "ghost")
    assert host.fence.admit("r", "p1", DE).admitted


def test_unknown_countries_follow_the_rooms_rule(host: Host) -> None:
    fence = host.fence
    assert fence.decide("r", UNKNOWN).reason is DecisionReason.UNKNOWN_ADMITTED
    fence.set_policy("r", RoomPolicy.deny("CN", unknown=UnknownRule.REFUSE))
    decision = fence.decide("r", UNKNOWN)
    assert (decision.verdict, decision.reason, decision.country) == (
        Verdict.REFUSE,
        DecisionReason.UNKNOWN_REFUSED,
        None,
    )


def test_decisions_are_shared_values_per_policy_version_and_location(host: Host) -> None:
    fence = host.fence
    first = fence.decide("r", "127.86.0.1")
    assert fence.decide("r", "127.86.9.9") is first
    fence.set_policy("r", RoomPolicy.deny("CN"))
    assert fence.decide("r", "127.86.0.1") is not first


class CountingLocator(Locator):
    """A real Locator that counts the addresses it was asked to place."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.located: list[str] = []

    def locate(self, address: str) -> Location:
        self.located.append(address)
        return super().locate(address)


def test_a_country_already_decided_is_decided_again_by_one_raw_lookup(
    loopback_db: Path, tmp_path: Path
) -> None:
    # The admission hot path (issue 12: admit <= 1.5x a raw lookup) builds no Location for a dotted
    # quad whose country this policy version already decided, and still answers as the careful path.
    locator = CountingLocator(loopback_db)
    fence = Geofence(lambda r: None, locator=locator)
    fence.set_policy("r", RoomPolicy.deny("CN"))
    first = fence.decide("r", "127.86.0.1")
    assert locator.located == ["127.86.0.1"]
    assert fence.decide("r", "127.86.9.9") is first
    assert fence.decide("r", "127.49.0.1").admitted
    assert fence.decide("r", "127.49.3.3").admitted
    assert locator.located == ["127.86.0.1", "127.49.0.1"]
    # What the hot path does not read goes through the Locator, every time: other forms of the
    # same address, inet_aton forms (refused), unknown addresses, IPv6.
    for address in ("::ffff:127.86.0.2", "fd00:86::1", "127.99.0.1", "127.99.0.1"):
        fence.decide("r", address)
    for text in ("127.86.1", "0127.86.0.1", "127.86.0.01", "0x7f.86.0.1", "127.86.0.1\x00"):
        with pytest.raises(InvalidAddress):
            fence.decide("r", text)
    assert len(locator.located) == 2 + 4 + 5
    # A reload drops what the old build decided: the next decision names the new build.
    moved = build_database(tmp_path / "moved.mmdb", ["127.86.0.0/16=DE"])
    fence.reload_database(moved)
    assert fence.decide("r", "127.86.0.1").country == "DE"
    assert fence.decide("r", "127.86.0.3").database == fence.database.label
    fence.close()


def test_a_live_policy_change_requests_ejection_of_the_restricted_only_once(host: Host) -> None:
    fence = host.fence
    for participant, address in (("cn", CN), ("hk", HK), ("de", DE)):
        fence.admit("r", participant, address)
    fence.admit("other", "cn2", CN)
    fence.set_policy("r", RoomPolicy.deny("CN"))
    fence.set_policy("r", RoomPolicy.deny("CN", "IR"))  # still pending: not requested twice
    assert host.ejected() == [("cn", Trigger.POLICY_CHANGED)]
    assert [p.participant for p in fence.participants() if p.ejecting] == ["cn"]
    fence.leave("r", "cn")
    assert outcomes(fence, EventKind.EJECTION) == [("cn", "requested"), ("cn", "completed")]
    assert {p.participant for p in fence.participants()} == {"hk", "de", "cn2"}


def test_an_operator_ejects_one_participant_by_hand_audited_through_the_same_eject_path(
    host: Host,
) -> None:
    fence = host.fence
    fence.set_policy("r", RoomPolicy(enforcement=Enforcement.MONITOR))  # by hand: monitor mode too
    fence.admit("r", "de", DE)
    fence.admit("r", "us", US)
    assert fence.eject_by_operator("r", "de", "spamming the chat")
    assert host.ejected() == [("de", Trigger.OPERATOR)]
    assert host.requests[0].decision.country == "DE"
    with pytest.raises(ParticipantError, match="already pending"):
        fence.eject_by_operator("r", "de", "again")
    with pytest.raises(ParticipantError, match="not admitted"):
        fence.eject_by_operator("r", "nobody", "typo")
    with pytest.raises(ParticipantError, match="not admitted"):
        fence.eject_by_operator("other-room", "us", "wrong room")
    fence.leave("r", "de")
    events = fence.audit.events(kind=EventKind.EJECTION)
    assert [(e.participant, e.outcome, e.reason, e.detail, e.country, e.address) for e in events] == [
        ("de", "requested", "operator", "operator: spamming the chat", "DE", DE),
        ("de", "completed", "operator", None, "DE", DE),
    ]
    assert [p.participant for p in fence.participants()] == ["us"]


def test_an_operator_ejection_the_host_fails_to_take_is_audited_and_reported(loopback_db: Path) -> None:
    def eject(request: EjectRequest) -> None:
        raise RuntimeError("host busy")

    fence = Geofence(eject, database=loopback_db)
    fence.admit("r", "p", DE)
    assert not fence.eject_by_operator("r", "p", "test")
    assert [(e.outcome, e.reason) for e in fence.audit.events(kind=EventKind.EJECTION)] == [
        ("requested", "operator"),
        ("eject_failed", "operator"),
    ]
    assert not fence.participants()[0].ejecting
    fence.close()


def test_the_server_default_applies_where_a_room_has_no_policy_of_its_own(host: Host) -> None:
    fence = host.fence
    fence.admit("plain", "a", CN)
    fence.admit("own", "b", CN)
    fence.set_policy("own", RoomPolicy())
    fence.set_default_policy(RoomPolicy.deny("CN"))
    assert host.ejected() == [("a", Trigger.POLICY_CHANGED)]
    assert not fence.admit("new-room", "c", CN).admitted


def test_monitor_mode_acts_on_nobody_and_audits_who_would_be_refused_or_ejected(host: Host) -> None:
    fence = host.fence
    fence.admit("r", "cn", CN)
    fence.set_policy("r", RoomPolicy.deny("CN", enforcement=Enforcement.MONITOR))
    late = fence.admit("r", "late", CN)
    assert (late.verdict, late.enforced, late.admitted, late.outcome) == (
        Verdict.REFUSE,
        False,
        True,
        "would_refuse",
    )
    assert host.requests == []
    assert outcomes(fence, EventKind.EJECTION) == [("cn", "would_eject")]
    assert {p.participant for p in fence.participants()} == {"cn", "late"}


def test_exemptions_by_identity_and_network_admit_the_restricted(host: Host) -> None:
    fence = host.fence
    fence.set_policy(
        "r",
        RoomPolicy.deny(
            "CN", exempt_participants=frozenset({"alice"}), exempt_networks=frozenset({"127.86.7.0/24"})
        ),
    )
    assert fence.admit("r", "a", CN, identity="alice").reason is DecisionReason.EXEMPT_PARTICIPANT
    assert fence.admit("r", "b", "127.86.7.7").reason is DecisionReason.EXEMPT_NETWORK
    assert fence.admit("r", "c", CN, identity="bob").reason is DecisionReason.COUNTRY_DENIED
    assert fence.admit("r", "d", DE, identity="alice").reason is DecisionReason.COUNTRY_NOT_RESTRICTED


def test_an_exemption_holds_however_often_its_country_was_refused_before(host: Host) -> None:
    # Decisions are shared between participants at one location; a refusal an exemption may lift
    # is not one of them.
    fence = host.fence
    fence.set_policy("r", RoomPolicy.deny("CN", exempt_participants=frozenset({"alice"})))
    for n in range(3):
        assert fence.admit("r", f"bob{n}", CN, identity="bob").reason is DecisionReason.COUNTRY_DENIED
        assert fence.admit("r", f"alice{n}", CN, identity="alice").reason is DecisionReason.EXEMPT_PARTICIPANT
        assert fence.decide("r", CN, identity="alice").admitted
        assert not fence.decide("r", CN).admitted


def test_a_restricted_media_address_requests_ejection(host: Host) -> None:
    fence = host.fence
    fence.set_policy("r", RoomPolicy.deny("CN"))
    fence.admit("r", "p", DE)
    assert fence.media_address("r", "p", DE, relayed=False).admitted
    assert host.requests == []
    decision = fence.media_address("r", "p", "fd00:86::5", relayed=False)
    assert (decision.verdict, decision.country) == (Verdict.REFUSE, "CN")
    assert host.ejected() == [("p", Trigger.MEDIA_ADDRESS)]
    assert [(e.outcome, e.country, e.detail) for e in fence.audit.events(kind=EventKind.MEDIA)] == [
        ("admitted", "DE", "direct"),
        ("refused", "CN", "direct"),
    ]
    with pytest.raises(ParticipantError):
        fence.media_address("r", "never-admitted", DE, relayed=False)


def test_a_media_address_reported_again_unchanged_is_audited_once(host: Host) -> None:
    # A host reports every new selected pair; a client churning source ports keeps its address.
    fence = host.fence
    fence.set_policy("r", RoomPolicy.deny("CN"))
    fence.admit("r", "p", DE)
    for _ in range(40):
        assert fence.media_address("r", "p", US, relayed=False).admitted
    fence.media_address("r", "p", US, relayed=True)  # judged otherwise: audited
    fence.media_address("r", "p", DE, relayed=True)  # another address: audited
    events = fence.audit.events(kind=EventKind.MEDIA)
    assert [(e.address, e.detail) for e in events] == [
        (US, "direct"),
        (US, "relayed (TURN)"),
        (DE, "relayed (TURN)"),
    ]


@pytest.mark.parametrize(
    ("rule", "signaling", "ejected", "reason"),
    [
        (RelayedRule.SIGNALING_COUNTRY, DE, False, DecisionReason.COUNTRY_NOT_RESTRICTED),
        (RelayedRule.ADMIT, DE, False, DecisionReason.RELAYED_ADMITTED),
        (RelayedRule.REFUSE, DE, True, DecisionReason.RELAYED_REFUSED),
    ],
)
def test_relayed_media_follows_the_relayed_rule(
    host: Host, rule: RelayedRule, signaling: str, ejected: bool, reason: DecisionReason
) -> None:
    fence = host.fence
    fence.set_policy("r", RoomPolicy.deny("CN", relayed=rule))
    fence.admit("r", "p", signaling)
    decision = fence.media_address("r", "p", CN, relayed=True)  # the relay sits in CN
    assert decision.reason is reason
    assert bool(host.requests) is ejected


def test_a_policy_change_rechecks_the_media_address_too(host: Host) -> None:
    fence = host.fence
    fence.admit("r", "p", DE)
    fence.media_address("r", "p", US, relayed=False)
    fence.set_policy("r", RoomPolicy.deny("US"))
    assert host.ejected() == [("p", Trigger.POLICY_CHANGED)]


def test_a_database_reload_ejects_who_moved_and_a_corrupt_file_keeps_the_old(
    host: Host, tmp_path: Path
) -> None:
    fence = host.fence
    fence.set_policy("r", RoomPolicy.deny("CN"))
    fence.admit("r", "de", DE)
    fence.admit("r", "us", US)
    broken = tmp_path / "broken.mmdb"
    broken.write_bytes(b"\xab\xcd\xefMaxMind.com" + b"\x00" * 64)
    before = fence.database
    with pytest.raises(DatabaseError):
        fence.reload_database(broken)
    assert fence.database == before
    assert host.requests == []
    moved = build_database(tmp_path / "moved.mmdb", ["127.49.0.0/16=CN", "127.1.0.0/16=US"])
    assert fence.reload_database(moved).database.path == str(moved)
    assert host.ejected() == [("de", Trigger.DATABASE_RELOADED)]
    assert [e.outcome for e in fence.audit.events(kind=EventKind.DATABASE)] == [
        "loaded",
        "reload_failed",
        "loaded",
    ]


def test_a_stale_database_is_reported_in_the_log_and_the_audit(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    old = build_database(tmp_path / "old.mmdb", ["127.1.0.0/16=US"], built=datetime(2020, 1, 1, tzinfo=UTC))
    fence = Geofence(lambda r: None, database=old)
    assert "days old" in caplog.text
    [event] = fence.audit.events(kind=EventKind.DATABASE)
    assert event.detail is not None
    assert "days old" in event.detail
    fence.close()


def test_corrupt_data_for_an_address_is_decided_as_unknown(corrupt_at_lookup: Path) -> None:
    fence = Geofence(lambda r: None, database=corrupt_at_lookup)
    fence.set_policy("r", RoomPolicy(unknown=UnknownRule.REFUSE))
    decision = fence.decide("r", CN)
    assert (decision.verdict, decision.reason) == (Verdict.REFUSE, DecisionReason.LOOKUP_FAILED)
    fence.close()


def test_an_asn_database_is_refused_at_start_up(asn_db: Path) -> None:
    with pytest.raises(DatabaseError, match="'GeoLite2-ASN' database, not a country one"):
        Geofence(lambda r: None, database=asn_db)


@pytest.mark.parametrize("mode", [Mode.DENY, Mode.ALLOW])
def test_reloading_an_asn_database_is_refused_audited_and_nobody_moves(
    host: Host, asn_db: Path, mode: Mode
) -> None:
    fence = host.fence
    fence.set_policy("r", RoomPolicy(mode=mode, countries=("CN",) if mode is Mode.DENY else ("DE", "US")))
    admitted = [fence.admit("r", p, a).admitted for p, a in (("de", DE), ("us", US))]
    assert admitted == [True, True]
    with pytest.raises(DatabaseError, match="GeoLite2-ASN"):
        fence.reload_database(asn_db)
    assert host.requests == []  # an allow list would otherwise have ejected everybody
    assert outcomes(fence, EventKind.DATABASE) == [(None, "loaded"), (None, "reload_failed")]
    cn = fence.admit("r", "cn", CN)  # a deny list would otherwise have admitted it as unknown
    assert (cn.admitted, cn.country) == (False, "CN")


def failing_once(calls: list[str]) -> Callable[[EjectRequest], None]:
    """An eject callable that appends each participant to ``calls`` and raises the first time."""

    def eject(request: EjectRequest) -> None:
        calls.append(request.participant)
        if len(calls) == 1:
            raise RuntimeError("host busy")

    return eject


def test_a_failing_eject_callable_is_audited_and_retried_on_the_next_change(loopback_db: Path) -> None:
    calls: list[str] = []
    fence = Geofence(failing_once(calls), database=loopback_db)
    fence.admit("r", "p", CN)
    fence.set_policy("r", RoomPolicy.deny("CN"))
    fence.set_policy("r", RoomPolicy.deny("CN", "IR"))
    assert calls == ["p", "p"]
    assert [e.outcome for e in fence.audit.events(kind=EventKind.EJECTION)] == [
        "requested",
        "eject_failed",
        "requested",
    ]
    fence.close()


def _break_audit(audit: AuditLog, how: str) -> None:
    """Make the audit's SQLite fail underneath the geofence, as a read-only or vanished disk does.

    (Root ignores file permissions, so the connection itself is made read-only, or closed.)
    """
    if how == "read-only":
        audit._db.execute("PRAGMA query_only = ON")  # writes now fail: attempt to write a readonly database
    else:
        audit._db.close()


@pytest.mark.parametrize("how", ["read-only", "closed"])
def test_enforcement_does_not_depend_on_the_audit_being_written(
    loopback_db: Path, tmp_path: Path, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    host = Host()
    audit = AuditLog(tmp_path / "audit.sqlite", synchronous="NORMAL")
    fence = host.fence = Geofence(host.eject, database=loopback_db, audit=audit)
    for participant, address in (("cn1", CN), ("de", DE), ("cn2", CN), ("hk", HK)):
        assert fence.admit("r", participant, address).admitted
    _break_audit(audit, how)

    fence.set_policy("r", RoomPolicy.deny("CN"))  # committed: no StorageError although unaudited
    assert host.ejected() == [("cn1", "policy_changed"), ("cn2", "policy_changed")]  # everyone checked
    assert {v.participant for v in fence.participants() if v.ejecting} == {"cn1", "cn2"}

    assert not fence.admit("r", "cn3", CN).admitted  # refused, and no ghost session left behind
    assert fence.admit("r", "de2", DE).admitted
    fence.media_address("r", "hk", CN, relayed=False)
    assert host.ejected()[-1] == ("hk", "media_address")
    for participant in ("cn1", "cn2", "hk"):
        fence.leave("r", participant)  # the host's answer to each ejection
    assert [v.participant for v in fence.participants()] == ["de", "de2"]
    assert fence.audit_failures == 10  # policy, 2 requested, 2 admissions, media, requested, 3 completed
    assert "audit event not recorded (10 so far)" in caplog.text
    fence.close()


async def test_a_policy_change_says_whom_it_ejected_and_whom_it_would_have_without_the_audit(
    loopback_db: Path, tmp_path: Path
) -> None:
    calls: list[str] = []
    audit = AuditLog(tmp_path / "audit.sqlite")
    fence = Geofence(failing_once(calls), database=loopback_db, audit=audit)
    for room, participant, address in (
        ("r", "first", CN),
        ("r", "cn", CN),
        ("r", "de", DE),
        ("w", "cnw", CN),
    ):
        fence.admit(room, participant, address)
    _break_audit(audit, "read-only")  # what the core reports does not come from the audit

    enforced = await fence.change_policy("r", RoomPolicy.deny("CN"))
    assert enforced.version == fence.policy("r").version == 1
    assert [(e.room, e.participant, e.outcome, e.country) for e in enforced.ejections] == [
        ("r", "first", Outcome.EJECT_FAILED, "CN"),  # the host did not take it
        ("r", "cn", Outcome.REQUESTED, "CN"),
    ]
    assert [e.participant for e in enforced.ejected] == ["cn"]

    monitored = await fence.change_default_policy(RoomPolicy.deny("CN", enforcement=Enforcement.MONITOR))
    assert (monitored.version, monitored.ejected) == (2, ())
    assert [(e.room, e.participant, e.outcome) for e in monitored.would_eject] == [
        ("w", "cnw", Outcome.WOULD_EJECT)
    ]
    assert (await fence.change_policy("r", RoomPolicy.deny("IR"))).ejections == ()
    fence.close()


def test_a_database_reload_says_whom_it_ejected(host: Host, tmp_path: Path) -> None:
    fence = host.fence
    fence.set_policy("r", RoomPolicy.deny("CN"))
    fence.admit("r", "de", DE)
    fence.admit("r", "us", US)
    moved = build_database(tmp_path / "moved.mmdb", ["127.49.0.0/16=CN", "127.1.0.0/16=US"])
    reloaded = fence.reload_database(moved)
    assert reloaded.database == fence.database
    assert [(e.participant, e.outcome, e.country) for e in reloaded.ejections] == [
        ("de", Outcome.REQUESTED, "CN")
    ]


def test_policies_and_audit_survive_a_restart_of_the_geofence(loopback_db: Path, tmp_path: Path) -> None:
    policies, audit = tmp_path / "policies.sqlite", tmp_path / "audit.sqlite"
    fence = Geofence(
        lambda r: None, database=loopback_db, policies=PolicyStore(policies), audit=AuditLog(audit)
    )
    fence.set_policy("r", RoomPolicy.deny("CN"))
    fence.admit("r", "p1", CN)
    fence.close()
    fence.close()
    again = Geofence(
        lambda r: None, database=loopback_db, policies=PolicyStore(policies), audit=AuditLog(audit)
    )
    assert not again.decide("r", CN).admitted
    assert [(e.participant, e.outcome) for e in again.audit.events(kind=EventKind.ADMISSION)] == [
        ("p1", "refused")
    ]
    again.close()


def test_alternating_media_addresses_are_audited_once_each(host: Host) -> None:
    # A client with two addresses alternating its checks: each report is decided, each entry
    # (address, relayed, decision) audited once for the session, not once per check.
    fence = host.fence
    fence.set_policy("r", RoomPolicy.deny("CN"))
    fence.admit("r", "p", DE)
    for i in range(30):
        assert fence.media_address("r", "p", ("127.1.2.2", "127.1.2.3")[i % 2], relayed=False).admitted
    assert [(e.address, e.count) for e in fence.audit.events(kind=EventKind.MEDIA)] == [
        ("127.1.2.2", 1),
        ("127.1.2.3", 1),
    ]
    assert fence.participants("r")[0].media_address == "127.1.2.3"


def test_media_addresses_beyond_the_limit_are_counted_and_a_restricted_one_still_ejects(
    loopback_db: Path,
) -> None:
    # An IPv6 /64 gives a client unlimited addresses: beyond a few per session the audit counts
    # them in summary rows, written when the session ends, while every one is still decided.
    host = Host()
    fence = Geofence(host.eject, database=loopback_db, media_audit=MediaAuditLimit(distinct=3))
    fence.set_policy("r", RoomPolicy.deny("CN"))
    fence.admit("r", "p", DE)
    for i in range(10):
        assert fence.media_address("r", "p", f"127.1.2.{i}", relayed=False).admitted
    assert host.requests == []
    decision = fence.media_address("r", "p", "fd00:86::7", relayed=False)
    assert (decision.admitted, decision.country) == (False, "CN")
    assert host.ejected() == [("p", Trigger.MEDIA_ADDRESS)]
    [requested] = fence.audit.events(kind=EventKind.EJECTION)
    assert (requested.outcome, requested.address, requested.country) == ("requested", "fd00:86::7", "CN")
    media = fence.audit.events(kind=EventKind.MEDIA)
    assert [(e.address, e.count) for e in media] == [(f"127.1.2.{i}", 1) for i in range(3)]
    fence.leave("r", "p")
    summaries = fence.audit.events(kind=EventKind.MEDIA)[3:]
    assert sorted((e.outcome, e.country, e.address, e.count) for e in summaries) == [
        ("admitted", "US", None, 7),
        ("refused", "CN", None, 1),
    ]
    assert all(e.participant == "p" and "counted" in (e.detail or "") for e in summaries)
    fence.close()


def test_a_churning_sessions_summaries_are_written_at_most_once_an_interval_and_when_it_ends(
    loopback_db: Path,
) -> None:
    def fence(interval: float) -> Geofence:
        limit = MediaAuditLimit(distinct=1, summary_interval=interval)
        fence = Geofence(Host().eject, database=loopback_db, media_audit=limit)
        fence.admit("r", "p", DE)
        return fence

    def counts(fence: Geofence) -> list[tuple[str | None, int]]:
        return [(e.address, e.count) for e in fence.audit.events(kind=EventKind.MEDIA)]

    slow = fence(3600)
    for i in range(50):
        slow.media_address("r", "p", f"127.1.2.{i}", relayed=False)
    assert counts(slow) == [("127.1.2.0", 1)]
    slow.leave("r", "p")
    assert counts(slow) == [("127.1.2.0", 1), (None, 49)]
    slow.close()

    due_at_once = fence(1e-9)
    for i in range(5):
        due_at_once.media_address("r", "p", f"127.1.2.{i}", relayed=False)
    # Each report writes what was counted before it, if due; the last one's count waits.
    assert counts(due_at_once) == [("127.1.2.0", 1), (None, 1), (None, 1), (None, 1)]
    due_at_once.leave("r", "p")
    assert counts(due_at_once)[-1] == (None, 1)
    due_at_once.close()


def test_an_ejection_the_host_failed_to_take_is_asked_again_when_the_same_address_is_renominated(
    loopback_db: Path,
) -> None:
    calls: list[str] = []
    fence = Geofence(failing_once(calls), database=loopback_db)
    fence.set_policy("r", RoomPolicy.deny("CN"))
    fence.admit("r", "p", DE)
    assert not fence.media_address("r", "p", CN, relayed=False).admitted
    assert not fence.media_address("r", "p", CN, relayed=False).admitted  # a new port, same address
    assert calls == ["p", "p"]
    assert [e.outcome for e in fence.audit.events(kind=EventKind.EJECTION)] == [
        "requested",
        "eject_failed",
        "requested",
    ]
    assert [e.address for e in fence.audit.events(kind=EventKind.MEDIA)] == [CN]
    assert not fence.media_address("r", "p", CN, relayed=False).admitted  # pending: not asked twice
    assert calls == ["p", "p"]
    fence.close()


def test_a_monitor_mode_media_address_reported_again_is_not_audited_again(host: Host) -> None:
    fence = host.fence
    fence.set_policy("r", RoomPolicy.deny("CN", enforcement=Enforcement.MONITOR))
    fence.admit("r", "p", DE)
    for _ in range(5):
        assert fence.media_address("r", "p", CN, relayed=False).admitted
    assert outcomes(fence, EventKind.MEDIA) == [("p", "would_refuse")]
    assert outcomes(fence, EventKind.EJECTION) == [("p", "would_eject")]
    assert host.requests == []
