"""The operator API and the metrics on a listener of their own, as ``serve --admin-port`` runs them."""

from __future__ import annotations

import asyncio
import socket

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from sfu_geofence.server.admin import TOKEN_ENV
from sfu_geofence.testing.process import spawn_serve, stop

TOKEN = "admin-listener-token-0123456789"
STARTUP = 60.0

METRICS = {
    "sfu_geofence_participants": "gauge",
    "sfu_geofence_rooms": "gauge",
    "sfu_geofence_websockets": "gauge",
    "sfu_geofence_pending_joins": "gauge",
    "sfu_geofence_joins": "counter",
    "sfu_geofence_cap_refusals": "counter",
    "sfu_geofence_ejections": "counter",
    "sfu_geofence_decision_seconds": "histogram",
    "sfu_geofence_ejection_seconds": "histogram",
    "sfu_geofence_forwarded_packets": "counter",
    "sfu_geofence_forwarded_payload_bytes": "counter",
    "sfu_geofence_nacks": "counter",
    "sfu_geofence_keyframe_requests": "counter",
    "sfu_geofence_event_loop_lag_seconds": "histogram",
    "sfu_geofence_gc_pause_seconds": "histogram",
    "sfu_geofence_database_age_seconds": "gauge",
    "sfu_geofence_audit_write_failures": "counter",
    "sfu_geofence_audit_refusals_counted": "counter",
}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_serve_puts_the_operator_api_and_metrics_on_the_admin_port_only() -> None:
    admin_port = _free_port()
    server = await spawn_serve(
        "--admin-port", str(admin_port), env={TOKEN_ENV: TOKEN}, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        assert server.stdout is not None
        public = (await asyncio.wait_for(server.stdout.readline(), STARTUP)).decode().split()[-1]
        said = (await asyncio.wait_for(server.stdout.readline(), STARTUP)).decode().strip()
        admin = f"http://127.0.0.1:{admin_port}"
        assert said == f"admin listening on {admin} (operator API {admin}/api, metrics {admin}/metrics)"
        base = public.removesuffix("/ws")
        async with aiohttp.ClientSession() as http:
            for path in ["/api/rooms", "/api/audit", "/api/database", "/metrics", "/console"]:
                async with http.get(base + path, headers={"Authorization": f"Bearer {TOKEN}"}) as response:
                    assert response.status == 404, path
            async with http.get(admin + "/api/rooms") as response:
                assert response.status == 401
                assert response.headers["WWW-Authenticate"] == 'Bearer realm="sfu-geofence"'
            async with http.get(admin + "/api/rooms", headers={"Authorization": "Bearer wrong"}) as response:
                assert (response.status, (await response.json())["error"]) == (403, "forbidden")
            async with http.get(
                admin + "/api/rooms", headers={"Authorization": f"Bearer {TOKEN}"}
            ) as response:
                assert (response.status, await response.json()) == (200, {"rooms": []})
            async with http.get(admin + "/metrics") as response:
                assert response.status == 200
                assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
                families = {f.name: f.type for f in text_string_to_metric_families(await response.text())}
        assert {name: families.get(name) for name in METRICS} == METRICS
    finally:
        await stop(server)
