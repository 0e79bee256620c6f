"""What `import sfu_geofence` brings in, and what it must not."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_importing_the_package_imports_neither_aiortc_nor_aiohttp() -> None:
    code = (
        "import sfu_geofence, sys; "
        "bad = [m for m in ('aiortc', 'aiohttp', 'aioice') if m in sys.modules]; "
        "assert not bad, bad; print(sfu_geofence.Geofence.__name__)"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert (result.returncode, result.stdout.strip()) == (0, "Geofence"), result.stderr


def test_the_embedded_database_and_its_licence_are_package_data() -> None:
    data = ROOT / "sfu_geofence" / "core" / "data"
    assert (data / "dbip-country-lite.mmdb").stat().st_size > 1_000_000
    assert "Creative Commons Attribution 4.0" in (data / "DBIP-LICENSE").read_text()
