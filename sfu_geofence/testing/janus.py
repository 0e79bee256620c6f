"""A real Janus (Debian's ``janus``) for tests: config files in a tmp dir, VideoRoom + HTTP only, by PID.

Janus 1.1.2 skips interfaces flagged ``IFF_LOOPBACK`` when it gathers host candidates, so a Janus
limited to 127.0.0.1 offers no candidate at all. Tests therefore run it in a LAN namespace
(:mod:`sfu_geofence.testing.netns`, marker ``lan``) and restrict its ICE to the namespace's dummy
interface with ``ice_enforce_list``; no STUN server is configured, so it gathers nothing else. Its
HTTP API (Janus API and Admin API) listens on 127.0.0.1 only. Every plugin, transport, event handler
and logger other than VideoRoom and HTTP is disabled, so nothing else listens or calls out.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .netns import LAN_INTERFACE
from .process import terminate

JANUS = "janus"
JANUS_MISSING = "Janus not found: apt-get install -y janus"
LISTEN_ADDRESS = "127.0.0.1"
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
"""No proxy from the environment: the API is on loopback."""
KEPT = {"plugins": "libjanus_videoroom.so", "transports": "libjanus_http.so"}
"""The only plugin and transport Janus loads; every other library in those folders is disabled."""


@dataclass(frozen=True)
class JanusServer:
    """A running Janus: its HTTP API, Admin API and admin secret, its process id and log file."""

    api_url: str
    """The Janus API's base URL (``http://127.0.0.1:<port>/janus``)."""
    admin_url: str
    """The Admin API's base URL (``http://127.0.0.1:<port>/admin``)."""
    admin_secret: str
    pid: int
    log: Path


def find_janus() -> str | None:
    """Path of the ``janus`` executable, or None."""
    return shutil.which(JANUS)


def library_root(executable: str) -> Path:
    """Where Janus's plugin, transport, event handler and logger folders are (the multiarch lib dir)."""
    prefix = Path(executable).resolve().parent.parent
    for root in [*sorted(prefix.glob("lib/*/janus")), prefix / "lib" / "janus"]:
        if (root / "plugins" / KEPT["plugins"]).exists():
            return root
    raise FileNotFoundError(f"no Janus plugin folder with {KEPT['plugins']} under {prefix / 'lib'}")


def _disabled(folder: Path, keep: str | None = None) -> str:
    """Every ``.so`` in ``folder`` but ``keep``, comma-separated, as Janus's ``disable`` setting wants."""
    names = sorted(p.name for p in folder.glob("*.so") if p.name != keep)
    return ",".join(names)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LISTEN_ADDRESS, 0))
        port: int = probe.getsockname()[1]
        return port


EVENT_HANDLER = "libjanus_sampleevh.so"
"""The HTTP event handler, loaded only when a test gives it a URL to post to."""


def write_config(
    directory: Path,
    root: Path,
    *,
    interface: str,
    api_port: int,
    admin_port: int,
    admin_secret: str,
    events_url: str | None = None,
    string_ids: bool = False,
) -> Path:
    """Write janus.jcfg and the VideoRoom and HTTP transport configs into ``directory``; return janus.jcfg.

    With ``events_url``, the HTTP event handler (sampleevh) posts Janus's WebRTC events (selected
    pairs among them) there, grouped, as compact JSON. ``string_ids``: VideoRoom rooms are named by
    strings, not numbers.
    """
    kept_events = EVENT_HANDLER if events_url is not None else None
    (directory / "janus.jcfg").write_text(
        f"""general: {{
	configs_folder = "{directory}"
	plugins_folder = "{root / "plugins"}"
	transports_folder = "{root / "transports"}"
	events_folder = "{root / "events"}"
	loggers_folder = "{root / "loggers"}"
	debug_level = 4
	admin_secret = "{admin_secret}"
	protected_folders = ["/bin", "/boot", "/dev", "/etc", "/lib", "/proc", "/sbin", "/sys", "/usr", "/var"]
}}
media: {{
	rtp_port_range = "20000-40000"
}}
nat: {{
	nice_debug = false
	ice_enforce_list = "{interface}"
	ignore_mdns = true
}}
plugins: {{
	disable = "{_disabled(root / "plugins", KEPT["plugins"])}"
}}
transports: {{
	disable = "{_disabled(root / "transports", KEPT["transports"])}"
}}
events: {{
	broadcast = {"true" if events_url is not None else "false"}
	disable = "{_disabled(root / "events", kept_events)}"
}}
loggers: {{
	disable = "{_disabled(root / "loggers")}"
}}
"""
    )
    (directory / "janus.transport.http.jcfg").write_text(
        f"""general: {{
	json = "compact"
	base_path = "/janus"
	http = true
	ip = "{LISTEN_ADDRESS}"
	port = {api_port}
	https = false
}}
admin: {{
	admin_base_path = "/admin"
	admin_http = true
	admin_ip = "{LISTEN_ADDRESS}"
	admin_port = {admin_port}
	admin_https = false
}}
cors: {{
}}
"""
    )
    (directory / "janus.plugin.videoroom.jcfg").write_text(
        "general: {\n" + ("\tstring_ids = true\n" if string_ids else "") + "}\n"
    )
    if events_url is not None:
        (directory / "janus.eventhandler.sampleevh.jcfg").write_text(
            f"""general: {{
	enabled = true
	events = "webrtc"
	grouping = true
	json = "compact"
	backend = "{events_url}"
}}
"""
        )
    return directory / "janus.jcfg"


@contextlib.contextmanager
def running_janus(
    directory: Path,
    *,
    interface: str = LAN_INTERFACE,
    within: float = 30.0,
    events_url: str | None = None,
    like: JanusServer | None = None,
    string_ids: bool = False,
) -> Iterator[JanusServer]:
    """Start Janus with config files in ``directory``, gathering ICE on ``interface`` only; yield it once
    its HTTP API answers; stop it by PID afterwards.

    ``events_url``: where its HTTP event handler posts (none without); ``string_ids``: VideoRoom rooms
    named by strings. ``like``: a Janus stopped
    before, whose ports and admin secret this one takes (a restart, as clients and the gate see it).
    Raises FileNotFoundError (:data:`JANUS_MISSING`) without ``janus``, and RuntimeError with Janus's
    log when its API does not answer within ``within`` seconds.
    """
    executable = find_janus()
    if executable is None:
        raise FileNotFoundError(JANUS_MISSING)
    api_port, admin_port = _free_port(), _free_port()
    while admin_port == api_port:
        admin_port = _free_port()
    secret = secrets.token_urlsafe(12)
    if like is not None:
        api_port, admin_port = _port(like.api_url), _port(like.admin_url)
        secret = like.admin_secret
    config = write_config(
        directory,
        library_root(executable),
        interface=interface,
        api_port=api_port,
        admin_port=admin_port,
        admin_secret=secret,
        events_url=events_url,
        string_ids=string_ids,
    )
    log = directory / "janus.log"
    argv = [executable, "-C", str(config), "-F", str(directory), "--disable-colors", "--log-stdout"]
    with open(log, "wb") as output:
        process = subprocess.Popen(argv, stdout=output, stderr=subprocess.STDOUT, cwd=directory)
    server = JanusServer(
        api_url=f"http://{LISTEN_ADDRESS}:{api_port}/janus",
        admin_url=f"http://{LISTEN_ADDRESS}:{admin_port}/admin",
        admin_secret=secret,
        pid=process.pid,
        log=log,
    )
    try:
        _wait_until_answering(process, server, within)
        yield server
    finally:
        terminate(process)


def _port(url: str) -> int:
    port = urllib.parse.urlsplit(url).port
    assert port is not None, url
    return port


def _wait_until_answering(process: subprocess.Popen[bytes], server: JanusServer, within: float) -> None:
    """Poll ``GET <api>/info`` until Janus answers it (it does once the HTTP transport is up)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"janus exited with {process.returncode}:\n{server.log.read_text(errors='replace')}"
            )
        with (
            contextlib.suppress(OSError, urllib.error.URLError),
            _DIRECT.open(f"{server.api_url}/info", timeout=1.0) as reply,
        ):
            if reply.status == 200:
                return
        time.sleep(0.05)
    raise RuntimeError(
        f"janus's API did not answer within {within:g} s:\n{server.log.read_text(errors='replace')}"
    )
