"""``/metrics``: what a call, an ejection and a refusal look like to Prometheus, read with its parser.

The figures come from the real server (a geofenced app on loopback, real aiortc peers): nothing here
counts on the side. Labels name causes (reasons, triggers, caps), never an address or a country.
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sfu_geofence.core.errors import DatabaseError
from sfu_geofence.server import ServerConfig
from sfu_geofence.server.admin import AdminConfig
from sfu_geofence.server.app import METRICS
from sfu_geofence.server.caps import Cap
from sfu_geofence.synthetic.client import SyntheticPeer, everyone_receives, synthetic_tracks
from sfu_geofence.testing.server import Served, geofenced_on_loopback
from sfu_geofence.testing.testdb import build_database
from sfu_geofence.testing.wait import eventually

TOKEN = "metrics-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
US, CN = "127.1.0.1", "127.86.0.1"
WITHIN = 30.0

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    database = build_database(tmp_path / "m.mmdb", ["127.1.0.0/16=US", "127.86.0.0/16=CN"])
    async with geofenced_on_loopback(ServerConfig(db_path=str(database), admin=AdminConfig(TOKEN))) as server:
        yield server


async def scrape(served: Served) -> tuple[str, Samples]:
    async with aiohttp.ClientSession() as http, http.get(f"{served.admin_base}/metrics") as response:
        assert response.status == 200
        text = await response.text()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    return text, samples


async def test_a_call_an_ejection_and_a_refusal_as_prometheus_reads_them(served: Served) -> None:
    us = SyntheticPeer(served.url, "m", US, name="us", tracks=synthetic_tracks())
    cn = SyntheticPeer(served.url, "m", CN, name="cn", tracks=synthetic_tracks())
    again = SyntheticPeer(served.url, "m", "127.86.0.2", name="cn-again")
    try:
        for peer in (us, cn):
            await peer.join(within=WITHIN)
        await eventually(lambda: everyone_receives([us, cn]), within=WITHIN)
        async with aiohttp.ClientSession() as http:
            policy = {"mode": "deny", "countries": ["CN"]}
            url = f"{served.admin_base}/api/rooms/m/policy"
            async with http.put(url, json=policy, headers=AUTH) as response:
                assert response.status == 200
        await cn.closed.wait()
        await again.join()
        await again.closed.wait()
        await eventually(
            lambda: None if len(served.sfu.participants) == 1 else "cn not gone yet", within=WITHIN
        )
        gc.collect()  # one collection at least, timed by the gc.callbacks probe
        received = sum(meter.packets for peer in (us, cn) for meter in peer.meter.tracks)  # all forwarded
        text, m = await scrape(served)
    finally:
        for peer in (us, cn, again):
            await peer.close()

    assert m[("sfu_geofence_participants", ())] == 1
    assert m[("sfu_geofence_rooms", ())] == 1
    assert m[("sfu_geofence_websockets", ())] == 1
    assert m[("sfu_geofence_pending_joins", ())] == 0  # us's media is up
    assert m[("sfu_geofence_joins_total", (("outcome", "admitted"), ("reason", "")))] == 2
    assert m[("sfu_geofence_joins_total", (("outcome", "refused"), ("reason", "country_denied")))] == 1
    assert m[("sfu_geofence_decision_seconds_count", ())] == 3
    assert m[("sfu_geofence_ejections_total", (("trigger", "policy_changed"),))] == 1
    assert m[("sfu_geofence_ejections_total", (("trigger", "operator"),))] == 0
    assert m[("sfu_geofence_ejection_seconds_count", ())] == 1
    assert m[("sfu_geofence_forwarded_packets_total", ())] >= received > 0  # what the peers got, at least
    assert (
        m[("sfu_geofence_forwarded_payload_bytes_total", ())]
        > 10 * m[("sfu_geofence_forwarded_packets_total", ())]
    )
    assert m[("sfu_geofence_keyframe_requests_total", ())] >= 1
    assert ("sfu_geofence_nacks_total", (("result", "retransmitted"),)) in m
    assert m[("sfu_geofence_event_loop_lag_seconds_count", ())] >= 1
    assert m[("sfu_geofence_gc_pause_seconds_count", ())] >= 1
    assert m[("sfu_geofence_database_age_seconds", ())] >= 0
    assert m[("sfu_geofence_audit_write_failures_total", ())] == 0
    assert {labels: v for (name, labels), v in m.items() if name == "sfu_geofence_cap_refusals_total"} == {
        (("cap", str(cap)),): 0.0 for cap in Cap
    }
    assert "127." not in text
    assert "CN" not in text
    assert "US" not in text


async def test_another_module_adds_a_gauge_read_at_each_scrape(served: Served) -> None:
    metrics = served.app[METRICS]
    draining = [0.0]
    metrics.add("gauge", "sfu_geofence_example_gauge", "an example", lambda: draining[0])
    metrics.add(
        "counter",
        "sfu_geofence_reloads",
        "Database reloads by result",
        lambda: {("ok",): 2, ("failed",): 1},
        labels=("result",),
    )
    _, before = await scrape(served)
    draining[0] = 1.0
    _, after = await scrape(served)
    assert (before[("sfu_geofence_example_gauge", ())], after[("sfu_geofence_example_gauge", ())]) == (
        0.0,
        1.0,
    )
    assert after[("sfu_geofence_reloads_total", (("result", "failed"),))] == 1


async def test_the_database_alarm_and_the_drain_are_gauges(served: Served, tmp_path: Path) -> None:
    fence = served.geofence
    _, before = await scrape(served)
    assert (before[("sfu_geofence_database_alarm", ())], before[("sfu_geofence_draining", ())]) == (0.0, 0.0)
    with pytest.raises(DatabaseError):
        fence.reload_database(tmp_path / "missing.mmdb")
    _, during = await scrape(served)
    assert during[("sfu_geofence_database_alarm", ())] == 1.0
    fence.reload_database()
    _, after = await scrape(served)
    assert after[("sfu_geofence_database_alarm", ())] == 0.0
    assert (
        after[("sfu_geofence_database_watch_reloads_total", ())] == 0.0
    )  # the API's reloads are not the watch's
