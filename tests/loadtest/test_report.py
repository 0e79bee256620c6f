"""The verdict: observed fates held against the plan's expectations, and what the report measures.

The records here are what a run's coordinator collects (events, requests, received tracks), written
out by hand so that every way of getting it wrong can be shown; the real run is in test_loadtest.py.
"""

from __future__ import annotations

import dataclasses

import pytest

from sfu_geofence.loadtest.report import RoomRequest, RunRecord, StepRecord, Thresholds, build_report
from sfu_geofence.loadtest.scenario import Plan, parse_countries, parse_step, plan_scenario
from sfu_geofence.loadtest.worker import PeerEvent, TrackRecord

T0 = 1000.0
STEP_AT = T0 + 5.0


def plan() -> Plan:
    """us-1, de-1, cn-1 in room-1; deny CN at 5 s, then cn-2 added (to be refused) at 6 s."""
    return plan_scenario(
        parse_countries("US:1,DE:1,CN:1"),
        1,
        [parse_step("5s:deny:CN"), parse_step("6s:add:CN:1")],
        duration=10,
    )


def track(receiver: str, source: str, kind: str, start: float, end: float, interval: float) -> TrackRecord:
    times = tuple(start + i * interval for i in range(int((end - start) / interval)))
    return TrackRecord(
        receiver=receiver,
        source=source,
        kind=kind,
        packets=len(times),
        lost=0,
        lost_at_mark=0,
        first_arrival=times[0],
        last_arrival=times[-1],
        frame_times=times,
        bucket_s=0.25,
        bucket_starts=(),
        bucket_bytes=(),
        bucket_packets=(),
    )


def record(events: list[PeerEvent], tracks: list[TrackRecord]) -> RunRecord:
    joined = [
        PeerEvent(name, "joined", T0 - 1, participant=f"p-{name}", join_ms=20.0)
        for name in ("us-1", "de-1", "cn-1")
    ]
    return RunRecord(
        url="http://127.0.0.1:1/ws",
        spawned=True,
        t0=T0,
        t_end=T0 + 10,
        setup_complete=True,
        events=joined + events,
        steps=[
            StepRecord(0, "5s:deny:CN", STEP_AT, [RoomRequest("room-1", STEP_AT, STEP_AT + 0.004, 200)]),
            StepRecord(1, "6s:add:CN:1", T0 + 6),
        ],
        tracks=tracks,
        media={},
        workers=2,
        sfu_cpu_s=1.0,
        generator_cpu_s=2.0,
        load_average={"start": [0.0, 0.0, 0.0], "end": [0.0, 0.0, 0.0]},
    )


def media(cn_until: float) -> list[TrackRecord]:
    tracks = []
    for receiver, source in [("us-1", "de-1"), ("de-1", "us-1"), ("us-1", "cn-1"), ("de-1", "cn-1")]:
        end = cn_until if source == "cn-1" else T0 + 10
        tracks.append(track(receiver, f"p-{source}", "audio", T0 - 1, end, 0.02))
        tracks.append(track(receiver, f"p-{source}", "video", T0 - 1, end, 1 / 15))
    return tracks


def test_exactly_the_expected_ejection_and_refusal_pass_with_the_latency_to_the_last_packet() -> None:
    events = [
        PeerEvent("cn-1", "ejected", STEP_AT + 0.010, close_code=4409),
        PeerEvent("cn-2", "refused", T0 + 6.02, close_code=4403),
    ]
    report = build_report(plan(), record(events, media(cn_until=STEP_AT + 0.045)))
    assert (report["collateral"], report["missed"], report["failed"], report["unheard"]) == ([], [], [], [])
    [ejected] = report["ejected"]
    assert ejected["peer"] == "cn-1"
    assert ejected["latency_ms"] == pytest.approx(20.0, abs=0.01)  # the last audio packet, at 5.02 s
    assert ejected["notified_ms"] == 10.0
    assert [r["peer"] for r in report["refused"]] == ["cn-2"]
    assert report["passed"] is True
    assert report["sfu_cpu_pct"] == 10.0


def test_an_ejection_before_the_request_is_collateral_and_a_restricted_participant_left_alone_is_missed() -> (
    None
):
    events = [
        PeerEvent("us-1", "ejected", T0 + 2, close_code=4409),  # nothing restricted US
        PeerEvent("cn-1", "ejected", STEP_AT - 0.5, close_code=4409),  # before deny CN was sent
        PeerEvent("cn-2", "joined", T0 + 6.02, participant="p-cn-2", join_ms=20.0),  # must be refused
    ]
    report = build_report(plan(), record(events, media(cn_until=STEP_AT - 0.5)))
    assert [(c["peer"], c["expected"], c["observed"]) for c in report["collateral"]] == [
        ("us-1", "stays", "ejected"),
        ("cn-1", "ejected", "ejected"),
    ]
    assert [(m["peer"], m["expected"], m["observed"]) for m in report["missed"]] == [
        ("cn-2", "refused", "stays")
    ]
    assert report["ejected"] == []
    assert report["passed"] is False


def test_a_participant_that_never_joined_or_dropped_for_another_reason_fails_the_run() -> None:
    events = [
        PeerEvent("cn-1", "closed", T0 + 3, close_code=4410, detail="disconnected"),
        PeerEvent("cn-2", "failed", T0 + 7, detail="no answer to join in 30 s"),
    ]
    report = build_report(plan(), record(events, media(cn_until=T0 + 3)))
    assert [(f["peer"], f["observed"]) for f in report["failed"]] == [("cn-1", "closed"), ("cn-2", "failed")]
    assert report["passed"] is False


def test_media_that_stops_between_participants_who_stay_is_unheard() -> None:
    events = [
        PeerEvent("cn-1", "ejected", STEP_AT + 0.010, close_code=4409),
        PeerEvent("cn-2", "refused", T0 + 6.02, close_code=4403),
    ]
    tracks = [t for t in media(cn_until=STEP_AT) if not (t.receiver == "us-1" and t.source == "p-de-1")]
    tracks.append(track("us-1", "p-de-1", "audio", T0 - 1, T0 + 10, 0.02))
    tracks.append(track("us-1", "p-de-1", "video", T0 - 1, T0 + 4, 1 / 15))  # video stops at 4 s
    report = build_report(plan(), record(events, tracks))
    assert [(u["receiver"], u["source"], u["kind"]) for u in report["unheard"]] == [("us-1", "de-1", "video")]
    assert report["passed"] is False


def test_continuity_compares_gaps_around_the_steps_with_the_baseline_and_gates_only_when_strict() -> None:
    events = [
        PeerEvent("cn-1", "ejected", STEP_AT + 0.010, close_code=4409),
        PeerEvent("cn-2", "refused", T0 + 6.02, close_code=4403),
    ]
    tracks = media(cn_until=STEP_AT)
    stalled = next(t for t in tracks if t.source == "p-us-1" and t.kind == "audio")
    times = [t for t in stalled.frame_times if not STEP_AT <= t < STEP_AT + 0.2]  # a 200 ms audio gap
    tracks[tracks.index(stalled)] = dataclasses.replace(stalled, frame_times=tuple(times))
    report = build_report(plan(), record(events, tracks))
    continuity = report["continuity"]
    assert continuity["by_kind"]["audio"]["event_gap_max_ms"] >= 200
    assert continuity["largest_event_gaps"][0]["receiver"] == "de-1"
    assert continuity["largest_event_gaps"][0]["source"] == "us-1"
    assert report["passed"] is True  # thresholds are warnings by default ...
    strict = build_report(plan(), record(events, tracks), Thresholds(max_gap_ratio=1.0, strict=True))
    assert continuity["worst_kind_ratio"] is not None
    assert strict["passed"] is (continuity["worst_kind_ratio"] <= 1.0)  # ... and gate with --strict
