"""The operator API, served on 127.0.0.1 over a real geofence, a real .mmdb and the reference host."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from sfu_geofence import AuditLog, EjectRequest, EventKind, Geofence, PolicyStore, Trigger
from sfu_geofence.server.admin import TOKEN_ENV, AdminConfig, create_admin_app
from sfu_geofence.testing.host_contract import write_contract_database
from sfu_geofence.testing.reference_host import ReferenceHost
from sfu_geofence.testing.wait import eventually

TOKEN = "operator-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CN, CN2, HK, TW, DE, US = "127.86.0.1", "127.86.0.2", "127.85.0.1", "127.88.0.1", "127.49.0.1", "127.1.0.1"
WITHIN = 20.0


class Names:
    """The SFU's side of the operator API: the names participants gave themselves."""

    def __init__(self) -> None:
        self.names: dict[str, dict[str, str]] = {}

    def display_names(self, room: str) -> Mapping[str, str]:
        return self.names.get(room, {})


@dataclass
class Operator:
    client: TestClient[web.Request, web.Application]
    host: ReferenceHost
    names: Names
    database: Path

    async def call(
        self, method: str, path: str, status: int, *, json: Any = None, data: str | None = None
    ) -> Any:
        """Make an authorised call; assert its status and return its JSON body."""
        response = await self.client.request(method, "/api" + path, headers=AUTH, json=json, data=data)
        body = await response.json()
        assert response.status == status, body
        assert response.content_type == "application/json"
        return body

    def audit(self, kind: EventKind) -> list[tuple[str | None, str]]:
        return [(e.participant, e.outcome) for e in self.host.geofence.audit.events(kind=kind)]

    async def gone(self, room: str, *participants: str | None) -> None:
        def check() -> str | None:
            still = set(participants) & self.host.connected(room)
            return f"{sorted(still)} still connected" if still else None

        await eventually(check, within=WITHIN)


@pytest.fixture
async def operator(tmp_path: Path) -> AsyncIterator[Operator]:
    database = write_contract_database(tmp_path / "contract.mmdb")
    host = ReferenceHost(
        database,
        policies=PolicyStore(tmp_path / "policies.sqlite"),
        audit=AuditLog(tmp_path / "audit.sqlite", synchronous="NORMAL"),
    )
    names = Names()
    app = web.Application()
    app.add_subapp("/api", create_admin_app(host.geofence, names, TOKEN))
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield Operator(client, host, names, database)
    await host.close()


# -- authentication --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": ""}, {"Authorization": f"Basic {TOKEN}"}, {"Authorization": "Bearer "}],
    ids=["no header", "empty", "basic scheme", "bearer without token"],
)
@pytest.mark.parametrize("path", ["/api/rooms", "/api/audit", "/api/database", "/api/no-such-endpoint"])
async def test_a_call_without_a_token_is_refused_401_with_a_bearer_challenge(
    operator: Operator, headers: dict[str, str], path: str
) -> None:
    response = await operator.client.get(path, headers=headers)
    assert response.status == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="sfu-geofence"'
    assert (await response.json())["error"] == "unauthorised"


@pytest.mark.parametrize(
    "token",
    [TOKEN[:-1] + "X", TOKEN[:-1], TOKEN + "0", "x", TOKEN.upper()],
    ids=["same length", "shorter", "longer", "very short", "other case"],
)
async def test_a_wrong_token_is_refused_403_and_changes_nothing(operator: Operator, token: str) -> None:
    fence = operator.host.geofence
    events = len(fence.audit.events())
    response = await operator.client.put(
        "/api/rooms/r/policy", json={"countries": ["CN"]}, headers={"Authorization": f"Bearer {token}"}
    )
    assert (response.status, (await response.json())["error"]) == (403, "forbidden")
    assert fence.policy("r").inherited
    assert len(fence.audit.events()) == events


async def test_the_bearer_scheme_is_case_insensitive(operator: Operator) -> None:
    response = await operator.client.get("/api/rooms", headers={"Authorization": f"bearer {TOKEN}"})
    assert response.status == 200


async def test_unknown_endpoints_and_wrong_methods_are_json_errors_after_authentication(
    operator: Operator,
) -> None:
    assert (await operator.call("GET", "/nothing-here", 404))["error"] == "not_found"
    response = await operator.client.post("/api/rooms", headers=AUTH)
    assert (response.status, (await response.json())["error"]) == (405, "method_not_allowed")
    assert "GET" in response.headers["Allow"]


async def test_answers_are_never_cached_and_a_closed_geofence_is_unavailable(operator: Operator) -> None:
    response = await operator.client.get("/api/rooms", headers=AUTH)
    assert response.headers["Cache-Control"] == "no-store"
    refused = await operator.client.get("/api/rooms")
    assert refused.headers["Cache-Control"] == "no-store"
    operator.host.geofence.close()
    answer = await operator.call("PUT", "/rooms/r/policy", 503, json={"countries": ["CN"]})
    assert answer["error"] == "unavailable"
    assert answer["message"].endswith("is closed")


def test_the_admin_token_comes_from_the_flag_else_the_environment_and_must_be_long() -> None:
    assert AdminConfig.from_env(None, {}).enabled is False
    assert AdminConfig.from_env(None, {TOKEN_ENV: TOKEN}).token == TOKEN
    assert AdminConfig.from_env("flag-token-0123456789", {TOKEN_ENV: TOKEN}).token == "flag-token-0123456789"
    with pytest.raises(ValueError, match="at least 16"):
        AdminConfig("short")
    with pytest.raises(ValueError, match="without spaces"):
        AdminConfig("a token with spaces in it")
    with pytest.raises(ValueError, match="at least 16"):
        create_admin_app(None, None, "short")  # type: ignore[arg-type]


# -- rooms and participants ------------------------------------------------------------------------


async def test_rooms_are_listed_with_participant_counts_and_the_policy_in_force(operator: Operator) -> None:
    host = operator.host
    await host.join("r", CN)
    await host.join("r", DE)
    await host.join("s", US)
    host.geofence.set_policy("prepared", host.geofence.policy("r").policy)
    body = await operator.call("GET", "/rooms", 200)
    assert [(r["room"], r["participants"], r["inherited"], r["version"]) for r in body["rooms"]] == [
        ("prepared", 0, False, 1),
        ("r", 2, True, 0),
        ("s", 1, True, 0),
    ]
    assert body["rooms"][1]["policy"]["mode"] == "deny"


async def test_participants_show_operators_address_country_field_database_and_decision(
    operator: Operator,
) -> None:
    host = operator.host
    cn = await host.join("r", CN, identity="alice@example.org", media_address=TW)
    de = await host.join("r", DE)
    assert cn is not None
    assert de is not None
    operator.names.names["r"] = {cn: "Alice"}
    body = await operator.call("GET", "/rooms/r/participants", 200)
    label = host.geofence.database.label

    def admitted(country: str) -> dict[str, Any]:
        return {
            "country": country,
            "source": "country_code",
            "database": label,
            "outcome": "admitted",
            "reason": "country_not_restricted",
            "rule": "deny (none); unknown admit; relayed use-signaling-country; enforce",
            "policy_version": 0,
        }

    assert body == {
        "room": "r",
        "participants": [
            {
                "participant": cn,
                "name": "Alice",
                "identity": "alice@example.org",
                "address": CN,
                **admitted("CN"),
                "media": {"address": TW, "relayed": False, **admitted("TW")},
                "ejecting": False,
            },
            {
                "participant": de,
                "name": None,
                "identity": None,
                "address": DE,
                **admitted("DE"),
                "media": None,
                "ejecting": False,
            },
        ],
    }


async def test_a_room_nobody_is_in_and_without_a_policy_is_unknown(operator: Operator) -> None:
    body = await operator.call("GET", "/rooms/nowhere/participants", 404)
    assert body["error"] == "unknown_room"
    assert "nowhere" in body["message"]
    operator.host.geofence.set_policy("prepared", None)  # returning to the default: still unknown
    await operator.call("GET", "/rooms/prepared/participants", 404)
    await operator.call("PUT", "/rooms/prepared/policy", 200, json={"countries": ["CN"]})
    assert await operator.call("GET", "/rooms/prepared/participants", 200) == {
        "room": "prepared",
        "participants": [],
    }


# -- policies --------------------------------------------------------------------------------------


async def test_a_live_deny_policy_ejects_exactly_the_restricted_participants_of_that_room(
    operator: Operator,
) -> None:
    host = operator.host
    joined = {
        name: await host.join("r", address)
        for name, address in (("cn", CN), ("cn2", CN2), ("hk", HK), ("tw", TW), ("de", DE))
    }
    elsewhere = await host.join("other", CN)
    body = await operator.call("PUT", "/rooms/r/policy", 200, json={"mode": "deny", "countries": ["cn"]})
    assert body["policy"]["countries"] == ["CN"]
    assert (body["inherited"], body["rule"]) == (
        False,
        "deny CN; unknown admit; relayed use-signaling-country; enforce",
    )
    assert body["ejections"] == [
        {"room": "r", "participant": joined["cn"], "outcome": "requested", "country": "CN"},
        {"room": "r", "participant": joined["cn2"], "outcome": "requested", "country": "CN"},
    ]
    await operator.gone("r", joined["cn"], joined["cn2"])
    assert host.connected("r") == {joined["hk"], joined["tw"], joined["de"]}
    assert host.connected("other") == {elsewhere}
    assert sorted(host.closed) == sorted(
        [("r", joined["cn"], "policy_changed"), ("r", joined["cn2"], "policy_changed")]
    )
    assert operator.audit(EventKind.EJECTION) == [
        (joined["cn"], "requested"),
        (joined["cn2"], "requested"),
        (joined["cn"], "completed"),
        (joined["cn2"], "completed"),
    ]
    assert await host.join("r", CN) is None, "a newcomer from CN is refused at join"
    got = await operator.call("GET", "/rooms/r/policy", 200)
    assert (got["room"], got["policy"], got["version"]) == ("r", body["policy"], body["version"])


async def test_monitor_mode_ejects_nobody_and_the_audit_shows_who_would_be_ejected(
    operator: Operator,
) -> None:
    host = operator.host
    cn = await host.join("r", CN)
    de = await host.join("r", DE)
    body = await operator.call(
        "PUT", "/rooms/r/policy", 200, json={"countries": ["CN"], "enforcement": "monitor"}
    )
    assert body["ejections"] == [{"room": "r", "participant": cn, "outcome": "would_eject", "country": "CN"}]
    late = await host.join("r", CN2)
    assert late is not None
    assert host.connected("r") == {cn, de, late}
    assert host.closed == []
    would = await operator.call("GET", "/audit?outcome=would_eject", 200)
    assert [(e["participant"], e["country"], e["reason"]) for e in would["events"]] == [
        (cn, "CN", "country_denied")
    ]
    refused = await operator.call("GET", "/audit?kind=admission&outcome=would_refuse", 200)
    assert [e["participant"] for e in refused["events"]] == [late]


async def test_deleting_a_room_policy_returns_the_room_to_the_default(operator: Operator) -> None:
    host = operator.host
    await operator.call("PUT", "/policy/default", 200, json={"countries": ["DE"]})
    await operator.call("PUT", "/rooms/r/policy", 200, json={"countries": []})
    de = await host.join("r", DE)
    body = await operator.call("DELETE", "/rooms/r/policy", 200)
    assert (body["inherited"], body["policy"]["countries"]) == (True, ["DE"])
    assert [e["participant"] for e in body["ejections"]] == [de]
    await operator.gone("r", de)
    assert (await operator.call("DELETE", "/rooms/r/policy", 404))["error"] == "no_room_policy"


async def test_the_server_default_is_read_and_replaced_and_reaches_rooms_without_their_own(
    operator: Operator,
) -> None:
    host = operator.host
    assert (await operator.call("GET", "/policy/default", 200))["policy"]["countries"] == []
    plain = await host.join("plain", CN)
    await operator.call("PUT", "/rooms/own/policy", 200, json={})
    own = await host.join("own", CN)
    body = await operator.call("PUT", "/policy/default", 200, json={"countries": ["CN"], "unknown": "refuse"})
    assert (body["policy"]["unknown"], body["inherited"], body["version"]) == ("refuse", True, 2)
    assert [(e["room"], e["participant"]) for e in body["ejections"]] == [("plain", plain)]
    await operator.gone("plain", plain)
    assert host.connected("own") == {own}
    assert (await operator.call("GET", "/policy/default", 200))["policy"] == body["policy"]


@pytest.mark.parametrize(
    ("body", "status", "error", "says"),
    [
        ('{"countries": ["CN"', 400, "malformed_json", "not JSON"),
        ("", 400, "malformed_json", "empty"),
        ("[]", 422, "invalid_body", "JSON object"),
        ('{"countries": ["CN", "XX"]}', 422, "unknown_country", "'XX'"),
        ('{"countries": ["China"]}', 422, "unknown_country", "'China'"),
        ('{"countries": "CN"}', 422, "invalid_policy", "'countries' must be a list of strings"),
        ('{"countries": [86]}', 422, "invalid_policy", "'countries' must be a list of strings"),
        ('{"mode": "block"}', 422, "invalid_policy", "'block'"),
        ('{"mode": 1}', 422, "invalid_policy", "'mode' must be a string"),
        ('{"contries": ["CN"]}', 422, "invalid_policy", "contries"),
        ('{"exempt_networks": ["10.0.0.0/33"]}', 422, "invalid_policy", "10.0.0.0/33"),
    ],
)
async def test_a_bad_policy_is_refused_with_a_specific_error_and_changes_nothing(
    operator: Operator, body: str, status: int, error: str, says: str
) -> None:
    fence = operator.host.geofence
    cn = await operator.host.join("r", CN)
    await operator.call("PUT", "/rooms/r/policy", 200, json={"countries": ["IR"]})
    before = (fence.policy("r"), fence.policies.default, len(fence.audit.events()))
    for path in ("/rooms/r/policy", "/policy/default"):
        answer = await operator.call("PUT", path, status, data=body)
        assert answer["error"] == error
        assert says in answer["message"]
        if error == "unknown_country":
            assert answer["country"] in body
    assert (fence.policy("r"), fence.policies.default, len(fence.audit.events())) == before
    assert operator.host.connected("r") == {cn}


async def test_a_body_larger_than_64_kib_is_refused(operator: Operator) -> None:
    huge = '{"exempt_participants": ["' + "a" * 70_000 + '"]}'
    assert (await operator.call("PUT", "/rooms/r/policy", 413, data=huge))["error"] == "body_too_large"
    assert operator.host.geofence.policy("r").inherited


async def _raw_put(operator: Operator, path: str, pieces: list[bytes], *, chunked: bool) -> tuple[int, Any]:
    """PUT ``pieces`` over a raw socket, one write each with a pause between, so that the body
    arrives at the server in several TCP segments (as from a slow or distant operator)."""
    server = operator.client.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    body = b"".join(pieces)
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {len(body)}"
    head = (
        f"PUT /api{path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Content-Type: application/json\r\n{framing}\r\nConnection: close\r\n\r\n"
    )
    writer.write(head.encode())
    for piece in pieces:
        writer.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
        await writer.drain()
        await asyncio.sleep(0.2)  # not a wait for a condition: the delay is what is being tested
    if chunked:
        writer.write(b"0\r\n\r\n")
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), timeout=WITHIN)
    writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), json.loads(rest.partition(b"\r\n\r\n")[2])


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_a_policy_arriving_in_several_pieces_is_read_whole(operator: Operator, chunked: bool) -> None:
    body = json.dumps({"mode": "deny", "countries": ["CN", "IR"], "unknown": "refuse"}).encode()
    pieces = [body[:10], body[10:25], body[25:]]
    status, answer = await _raw_put(operator, "/rooms/r/policy", pieces, chunked=chunked)
    assert status == 200, answer
    assert answer["policy"]["countries"] == ["CN", "IR"]
    assert answer["policy"]["unknown"] == "refuse"


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_a_body_over_64_kib_in_several_pieces_is_refused(operator: Operator, chunked: bool) -> None:
    huge = ('{"exempt_participants": ["' + "a" * 70_000 + '"]}').encode()
    status, answer = await _raw_put(
        operator, "/rooms/r/policy", [huge[:40_000], huge[40_000:]], chunked=chunked
    )
    assert (status, answer["error"]) == (413, "body_too_large")
    assert operator.host.geofence.policy("r").inherited


async def test_a_policy_change_acts_and_answers_200_even_when_the_audit_cannot_be_written(
    operator: Operator,
) -> None:
    host = operator.host
    cn, de = await host.join("r", CN), await host.join("r", DE)
    host.geofence.audit._db.execute("PRAGMA query_only = ON")  # the audit's file turned read-only
    body = await operator.call("PUT", "/rooms/r/policy", 200, json={"countries": ["CN"]})
    # The answer is the core's own account of what it did, not read back from the audit.
    assert (body["policy"]["countries"], [e["participant"] for e in body["ejections"]]) == (["CN"], [cn])
    assert "audit_incomplete" not in body
    await operator.gone("r", cn)
    assert host.connected("r") == {de}
    audit = await operator.call("GET", "/audit?limit=1", 200)
    assert audit["audit_failures"] == 3  # policy changed, ejection requested, ejection completed


@pytest.mark.parametrize(
    "room",
    ["Town%20Hall%20", "a" * 5000, "a" * 65, "r%C3%A9union", "town%09hall"],
    ids=["trailing space", "5000 characters", "65 characters", "non-ascii", "tab"],
)
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/participants"),
        ("POST", "/participants/p1/eject"),
        ("GET", "/policy"),
        ("PUT", "/policy"),
        ("DELETE", "/policy"),
    ],
)
async def test_a_room_name_signaling_could_never_join_is_refused_422_on_every_room_route(
    operator: Operator, room: str, method: str, path: str
) -> None:
    fence = operator.host.geofence
    events = len(fence.audit.events())
    body = {"countries": ["CN"]} if method == "PUT" else None
    answer = await operator.call(method, f"/rooms/{room}{path}", 422, json=body)
    assert answer["error"] == "invalid_room"
    assert "1-64 characters of A-Z a-z 0-9 _ . -" in answer["message"]
    assert fence.policies.rooms() == {}
    assert len(fence.audit.events()) == events


async def test_every_room_name_signaling_accepts_is_accepted(operator: Operator) -> None:
    room = "Town_Hall.2026-" + "x" * 49
    body = await operator.call("PUT", f"/rooms/{room}/policy", 200, json={"countries": ["CN"]})
    assert body["room"] == room


# -- ejection by hand ------------------------------------------------------------------------------


async def test_an_operator_ejects_one_participant_by_hand_and_it_is_audited(operator: Operator) -> None:
    host = operator.host
    de = await host.join("r", DE)
    us = await host.join("r", US)
    assert de is not None
    assert us is not None
    body = await operator.call("POST", f"/rooms/r/participants/{de}/eject", 202, json={"reason": "abuse"})
    assert body == {"room": "r", "participant": de, "status": "requested"}
    await operator.gone("r", de)
    assert host.connected("r") == {us}
    assert host.closed == [("r", de, "operator")]
    audit = await operator.call("GET", f"/audit?kind=ejection&participant={de}", 200)
    assert [
        (e["outcome"], e["reason"], e["detail"], e["country"], e["address"]) for e in audit["events"]
    ] == [
        ("requested", "operator", "operator: abuse", "DE", DE),
        ("completed", "operator", None, "DE", DE),
    ]
    assert (await operator.call("POST", f"/rooms/r/participants/{de}/eject", 404))["error"] == (
        "unknown_participant"
    )


async def test_ejecting_an_unknown_participant_or_room_or_with_a_bad_reason_is_refused(
    operator: Operator,
) -> None:
    host = operator.host
    us = await host.join("r", US)
    events = len(host.geofence.audit.events())
    assert (await operator.call("POST", "/rooms/r/participants/p999/eject", 404))["error"] == (
        "unknown_participant"
    )
    assert (await operator.call("POST", f"/rooms/elsewhere/participants/{us}/eject", 404))["error"] == (
        "unknown_room"
    )
    for reason in (42, "", "x" * 501):
        answer = await operator.call(
            "POST", f"/rooms/r/participants/{us}/eject", 422, json={"reason": reason}
        )
        assert answer["error"] == "invalid_reason"
    answer = await operator.call("POST", f"/rooms/r/participants/{us}/eject", 422, json={"why": "x"})
    assert answer["error"] == "invalid_body"
    await operator.call("POST", f"/rooms/r/participants/{us}/eject", 400, data="{oops")
    assert len(host.geofence.audit.events()) == events
    assert host.connected("r") == {us}


async def test_a_second_ejection_while_the_first_is_pending_is_a_conflict(tmp_path: Path) -> None:
    requests: list[EjectRequest] = []  # a host that has not closed the participant yet
    fence = Geofence(requests.append, database=write_contract_database(tmp_path / "c.mmdb"))
    fence.admit("r", "p1", DE)
    app = web.Application()
    app.add_subapp("/api", create_admin_app(fence, None, TOKEN))
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        first = await client.post("/api/rooms/r/participants/p1/eject", headers=AUTH)
        second = await client.post("/api/rooms/r/participants/p1/eject", headers=AUTH)
        assert (first.status, second.status) == (202, 409)
        assert (await second.json())["error"] == "ejection_pending"
        listed = await (await client.get("/api/rooms/r/participants", headers=AUTH)).json()
        assert [(p["participant"], p["ejecting"], p["name"]) for p in listed["participants"]] == [
            ("p1", True, None)
        ]
    assert [(r.participant, r.trigger) for r in requests] == [("p1", Trigger.OPERATOR)]
    fence.close()


# -- audit -----------------------------------------------------------------------------------------


async def test_the_audit_log_is_read_page_by_page_with_after_id_without_skipping(operator: Operator) -> None:
    host = operator.host
    for address in (CN, HK, DE, US, TW):
        await host.join("r", address)
    everything = [e.id for e in host.geofence.audit.events()]
    newest = await operator.call("GET", "/audit?limit=2", 200)
    assert ([e["id"] for e in newest["events"]], newest["more"]) == (everything[-2:], True)
    seen: list[int] = []
    after = 0
    while True:
        page = await operator.call("GET", f"/audit?after_id={after}&limit=2", 200)
        seen += [e["id"] for e in page["events"]]
        after = page["last_id"]
        if not page["more"]:
            break
    assert seen == everything
    await host.join("r", CN2)  # a live console polling after the last id sees only what is new
    page = await operator.call("GET", f"/audit?after_id={after}", 200)
    assert [(e["kind"], e["address"], e["country"]) for e in page["events"]] == [("admission", CN2, "CN")]
    event = page["events"][0]
    assert set(event) == {
        "id", "time", "kind", "outcome", "room", "participant", "address", "country", "source",
        "database", "rule", "reason", "actor", "policy_version", "detail", "count",
    }  # fmt: skip
    assert event["count"] == 1
    empty = await operator.call("GET", f"/audit?after_id={event['id']}", 200)
    assert empty == {"events": [], "last_id": event["id"], "more": False, "audit_failures": 0}


async def test_the_audit_log_is_filtered_by_room_participant_kind_outcome_and_time(
    operator: Operator,
) -> None:
    host = operator.host
    await operator.call("PUT", "/rooms/r/policy", 200, json={"countries": ["CN"]})
    await host.join("r", CN)
    de = await host.join("s", DE)
    assert [e["participant"] for e in (await operator.call("GET", "/audit?room=s", 200))["events"]] == [de]
    assert [e["room"] for e in (await operator.call("GET", f"/audit?participant={de}", 200))["events"]] == [
        "s"
    ]
    refused = (await operator.call("GET", "/audit?kind=admission&outcome=refused", 200))["events"]
    assert [(e["room"], e["country"], e["reason"]) for e in refused] == [("r", "CN", "country_denied")]
    policy = (await operator.call("GET", "/audit?kind=policy", 200))["events"]
    assert [(e["room"], e["outcome"], e["policy_version"]) for e in policy] == [("r", "changed", 1)]
    assert (await operator.call("GET", "/audit?since=2999-01-01T00:00:00Z", 200))["events"] == []
    assert len((await operator.call("GET", "/audit?since=2000-01-01T00:00:00", 200))["events"]) >= 4


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("kind=nonsense", "kind must be one of admission"),
        ("limit=0", "limit must be an integer from 1 to 1000"),
        ("limit=1001", "limit must be an integer from 1 to 1000"),
        ("limit=ten", "limit must be an integer"),
        ("after_id=-1", "after_id must be an integer from 0 to 9223372036854775807"),
        ("since=yesterday", "since must be an ISO 8601 time"),
        ("rooom=r", "unknown parameter(s) rooom"),
    ],
)
async def test_bad_audit_parameters_are_refused_with_a_specific_error(
    operator: Operator, query: str, says: str
) -> None:
    answer = await operator.call("GET", f"/audit?{query}", 400)
    assert answer["error"] == "bad_parameter"
    assert says in answer["message"]


# -- the database ----------------------------------------------------------------------------------


async def test_the_database_in_use_is_described_with_its_age_and_attribution(operator: Operator) -> None:
    body = await operator.call("GET", "/database", 200)
    info = operator.host.geofence.database
    assert body["age_seconds"] < 60  # built by the fixture just now
    assert body | {"age_days": 0.0, "age_seconds": 0} == {
        "label": info.label,
        "path": str(operator.database),
        "type": "DBIP-Country-Lite",
        "built": info.built.isoformat(),
        "age_days": 0.0,
        "stale": False,
        "warning": None,
        "embedded": False,
        "ip_version": 6,
        "attribution": None,
        "age_seconds": 0,
        "alarm": None,
    }


@pytest.mark.timeout(30)  # before the fix, open() on the FIFO blocked the event loop for ever
@pytest.mark.parametrize("kind", ["fifo", "directory"])
async def test_a_reload_from_a_path_that_is_not_a_regular_file_is_refused_422(
    operator: Operator, tmp_path: Path, kind: str
) -> None:
    path = tmp_path / "not-a-file.mmdb"
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.mkdir()
    before = operator.host.geofence.database
    answer = await operator.call("POST", "/database/reload", 422, json={"path": str(path)})
    assert answer["error"] == "invalid_path"
    assert "not a regular file" in answer["message"]
    assert operator.host.geofence.database == before


async def test_a_database_reload_ejects_who_moved_and_a_bad_file_keeps_the_old_one(
    operator: Operator, tmp_path: Path
) -> None:
    host = operator.host
    await operator.call("PUT", "/rooms/r/policy", 200, json={"countries": ["CN"]})
    de = await host.join("r", DE)
    us = await host.join("r", US)
    corrupt = tmp_path / "corrupt.mmdb"
    corrupt.write_bytes(operator.database.read_bytes()[:200])
    before = host.geofence.database
    for path, says in ((str(corrupt), "cannot be read"), (str(tmp_path / "missing.mmdb"), "does not exist")):
        answer = await operator.call("POST", "/database/reload", 422, json={"path": path})
        assert answer["error"] == "database_unusable"
        assert says in answer["message"]
        assert before.label in answer["message"]
        assert answer["kept"]["path"] == str(operator.database)
        assert host.geofence.database == before
        # ...and the alarm stays up, for the console and monitoring, until a reload works.
        assert answer["kept"]["alarm"]["message"] == answer["message"]
        assert (await operator.call("GET", "/database", 200))["alarm"] == answer["kept"]["alarm"]
    assert (await operator.call("POST", "/database/reload", 422, json={"path": 7}))["error"] == "invalid_path"
    assert (await operator.call("POST", "/database/reload", 422, json={"file": "x"}))[
        "error"
    ] == "invalid_body"
    assert host.connected("r") == {de, us}
    assert operator.audit(EventKind.DATABASE) == [
        (None, "loaded"),
        (None, "reload_failed"),
        (None, "reload_failed"),
    ]

    moved = write_contract_database(tmp_path / "moved.mmdb", moved={"DE": "CN"})
    body = await operator.call("POST", "/database/reload", 200, json={"path": str(moved)})
    assert (body["path"], body["alarm"]) == (str(moved), None)
    assert [(e["participant"], e["country"]) for e in body["ejections"]] == [(de, "CN")]
    await operator.gone("r", de)
    assert host.connected("r") == {us}
    again = await operator.call("POST", "/database/reload", 200)  # no body: re-read the current file
    assert (again["path"], again["ejections"]) == (str(moved), [])


# -- who made a change, and why ------------------------------------------------------------------------


async def test_every_change_records_the_actor_and_reason_the_operator_gives(
    operator: Operator, tmp_path: Path
) -> None:
    who = {"actor": "alice@ops", "reason": "ticket 4711: sanctions list update"}
    await operator.call("PUT", "/rooms/r/policy", 200, json={"countries": ["CN"], **who})
    await operator.call("PUT", "/policy/default", 200, json={"mode": "deny", "countries": ["RU"], **who})
    await operator.call("DELETE", "/rooms/r/policy", 200, json=who)
    await operator.call("PUT", "/rooms/r/policy", 200, json={"countries": ["TW"]})  # both are optional
    de = await operator.host.join("r", DE)
    await operator.call("POST", f"/rooms/r/participants/{de}/eject", 202, json=who)
    await operator.call("POST", "/database/reload", 200, json=who)
    audit = operator.host.geofence.audit
    changes = [(e.outcome, e.room, e.rule, e.actor, e.reason) for e in audit.events(kind=EventKind.POLICY)]
    tail = "unknown admit; relayed use-signaling-country; enforce"
    assert changes == [
        ("changed", "r", f"deny CN; {tail}", *who.values()),
        ("default_changed", None, f"deny RU; {tail}", *who.values()),
        ("changed", "r", f"deny RU; {tail}", *who.values()),
        ("changed", "r", f"deny TW; {tail}", None, None),
    ]
    [requested] = audit.events(kind=EventKind.EJECTION, outcome="requested")
    assert (requested.actor, requested.reason, requested.detail) == (
        "alice@ops",
        "operator",
        "operator: ticket 4711: sanctions list update",
    )
    [*_, reloaded] = audit.events(kind=EventKind.DATABASE)
    assert (reloaded.outcome, reloaded.actor, reloaded.reason) == ("loaded", *who.values())
    events = (await operator.call("GET", "/audit?kind=policy", 200))["events"]
    assert [(e["actor"], e["reason"]) for e in events] == [tuple(who.values())] * 3 + [(None, None)]


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("actor", "", "invalid_actor"),
        ("actor", "x" * 101, "invalid_actor"),
        ("actor", 7, "invalid_actor"),
        ("actor", "bob\nFAKE LOG LINE", "invalid_actor"),
        ("reason", "", "invalid_reason"),
        ("reason", "y" * 501, "invalid_reason"),
        ("reason", ["a list"], "invalid_reason"),
    ],
)
async def test_a_bad_actor_or_reason_is_refused_422_and_changes_nothing(
    operator: Operator, field: str, value: object, error: str
) -> None:
    before = operator.host.geofence.policy("r")
    answer = await operator.call("PUT", "/rooms/r/policy", 422, json={"countries": ["CN"], field: value})
    assert answer["error"] == error
    assert operator.host.geofence.policy("r") == before
    assert operator.audit(EventKind.POLICY) == []
