"""What `import sfu_geofence` brings in, and what it must not; what a built wheel carries."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


@pytest.mark.parametrize(
    ("module", "name"),
    [("sfu_geofence", "Geofence"), ("sfu_geofence.protocol", "Join")],
    ids=["the core", "the signaling protocol"],
)
def test_importing_the_package_imports_neither_aiortc_nor_aiohttp(module: str, name: str) -> None:
    code = (
        f"import {module}, sys; "
        "bad = [m for m in ('aiortc', 'aiohttp', 'aioice') if m in sys.modules]; "
        f"assert not bad, bad; print({module}.{name}.__name__)"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert (result.returncode, result.stdout.strip()) == (0, name), result.stderr


def test_the_embedded_database_and_its_licence_are_package_data() -> None:
    data = ROOT / "sfu_geofence" / "core" / "data"
    assert (data / "dbip-country-lite.mmdb").stat().st_size > 1_000_000
    assert "Creative Commons Attribution 4.0" in (data / "DBIP-LICENSE").read_text()


# Not part of a source distribution's payload, and large or machine-specific.
_NOT_SOURCE = shutil.ignore_patterns(
    ".git", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".venv", "*.pyc", "_fanout.*"
)


CHECK_INSTALLED = (
    "import sfu_geofence.server.demo as d, sfu_geofence.rtc.fanout as f; "
    "assert f.c_fanout_enabled(), 'no C fan-out'; print(d.PAGES)"
)


@pytest.mark.slow
def test_a_wheel_installed_in_a_fresh_venv_serves_the_demo_pages(tmp_path: Path) -> None:
    """``pip install .`` / a wheel, not only an editable checkout, has the demo's pages (package data)."""
    tree = tmp_path / "tree"  # built from a copy: the build writes build/ and *.egg-info beside it
    shutil.copytree(ROOT, tree, ignore=_NOT_SOURCE)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"), str(tree)],
        check=True,
        timeout=300,
    )
    [wheel] = (tmp_path / "dist").glob("sfu_geofence-*.whl")
    venv = tmp_path / "venv"
    # The dependencies come from this interpreter's site-packages (offline and fast); the package
    # itself only from the wheel: --ignore-installed never touches the checkout's editable install.
    subprocess.run(
        [sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)],
        check=True,
        timeout=120,
    )
    python = venv / "bin" / "python"
    subprocess.run(
        [
            *pip,
            "--python",
            str(python),
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            "--ignore-installed",
            str(wheel),
        ],
        check=True,
        timeout=300,
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    where = subprocess.run(
        # The wheel carries the C fan-out, compiled when it was built (setup.py).
        [str(python), "-c", CHECK_INSTALLED],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    pages = Path(where.stdout.strip())
    assert pages.is_relative_to(venv), f"imported from {pages}, not from the wheel"

    demo = subprocess.Popen(
        [str(venv / "bin" / "sfu-geofence"), "demo", "--port", "0", "--log-level", "error"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert demo.stdout is not None
        printed = "".join(demo.stdout.readline() for _ in range(3))
        found = re.findall(r"open (http://127\.0\.0\.1:\d+)/ ", printed)
        admin = re.findall(r"operator console: (http://127\.0\.0\.1:\d+)/console", printed)
        assert len(found) == len(admin) == 1, printed
        pages = (
            (found[0], "/", "index.html"),
            (found[0], "/demo/app.js", "app.js"),
            (admin[0], "/console", "console.html"),  # the console is on the admin listener
        )
        for base, path, source in pages:
            with urllib.request.urlopen(base + path, timeout=10) as response:
                expected = (ROOT / "sfu_geofence" / "server" / "pages" / source).read_bytes()
                assert (response.status, response.read()) == (200, expected), path
        demo.send_signal(signal.SIGTERM)
        assert demo.wait(timeout=20) == 0
    finally:
        if demo.poll() is None:
            demo.kill()
        demo.wait()
