"""The Janus harness: only VideoRoom and HTTP, no STUN, ICE on the given interface, APIs on 127.0.0.1."""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from sfu_geofence.testing.ci import skip_or_fail
from sfu_geofence.testing.janus import JANUS_MISSING, JanusServer, find_janus, library_root, write_config

_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _root() -> Path:
    executable = find_janus()
    if executable is None:
        skip_or_fail(JANUS_MISSING, kind="janus")
    return library_root(executable)


def _disabled(config: str, section: str) -> set[str]:
    match = re.search(rf"^{section}: {{\n(?:\t[^\n]*\n)*?\tdisable = \"([^\"]*)\"", config, re.MULTILINE)
    assert match is not None, f"no disable list in section {section}"
    return set(match.group(1).split(","))


def _libraries(folder: Path) -> set[str]:
    return {p.name for p in folder.glob("*.so")}


@pytest.mark.janus
def test_the_config_keeps_only_videoroom_and_http_and_names_no_stun_server(tmp_path: Path) -> None:
    root = _root()
    config = write_config(
        tmp_path, root, interface="sfugf-lan", api_port=1111, admin_port=2222, admin_secret="s3cret"
    ).read_text()
    assert _disabled(config, "plugins") == _libraries(root / "plugins") - {"libjanus_videoroom.so"}
    assert _disabled(config, "transports") == _libraries(root / "transports") - {"libjanus_http.so"}
    assert _disabled(config, "events") == _libraries(root / "events")
    assert _disabled(config, "loggers") == _libraries(root / "loggers")
    assert "stun" not in config.lower()
    assert "turn_" not in config.lower()
    assert '\tice_enforce_list = "sfugf-lan"\n' in config
    assert '\tadmin_secret = "s3cret"\n' in config
    http = (tmp_path / "janus.transport.http.jcfg").read_text()
    assert re.findall(r"^\t(\w*ip|\w*port|\w*https?) = (.*)$", http, re.MULTILINE) == [
        ("http", "true"),
        ("ip", '"127.0.0.1"'),
        ("port", "1111"),
        ("https", "false"),
        ("admin_http", "true"),
        ("admin_ip", '"127.0.0.1"'),
        ("admin_port", "2222"),
        ("admin_https", "false"),
    ]


@pytest.mark.janus
@pytest.mark.lan
def test_a_started_janus_runs_videoroom_and_http_only_and_answers_its_admin_api(janus: JanusServer) -> None:
    with _DIRECT.open(f"{janus.api_url}/info", timeout=5) as reply:
        info = json.load(reply)
    assert list(info["plugins"]) == ["janus.plugin.videoroom"]
    assert list(info["transports"]) == ["janus.transport.http"]
    assert info["events"] == {}
    assert info["loggers"] == {}
    assert _admin(janus, janus.admin_secret)["janus"] == "success"
    refused = _admin(janus, "a guess")
    assert refused["janus"] == "error"
    assert refused["error"]["code"] == 403  # JANUS_ERROR_UNAUTHORIZED


def _admin(janus: JanusServer, secret: str) -> dict[str, Any]:
    """The Admin API's answer to ``list_sessions`` (which needs the admin secret, unlike ``ping``)."""
    request = json.dumps({"janus": "list_sessions", "transaction": "t", "admin_secret": secret}).encode()
    with _DIRECT.open(urllib.request.Request(janus.admin_url, data=request), timeout=5) as reply:
        answer: dict[str, Any] = json.load(reply)
    return answer
