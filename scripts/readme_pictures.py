"""Regenerate the README's and docs/demo.md's screenshots (docs/demo-*.png).

The browser test that takes them writes into a temporary directory on an ordinary ``pytest`` run, so
a test run never rewrites tracked files; this script runs that one test with $SFU_GEOFENCE_PICTURES
pointing at docs/ (and ``CI=true``, so a missing Chromium fails instead of skipping). Usage, from the
repository's root, as root (the browser runs in a network namespace with only ``lo``)::

    python scripts/readme_pictures.py
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEST = "tests/browser/test_demo_in_a_browser.py::" + (
    "test_the_operator_denies_china_the_chinese_tab_is_ejected_the_others_keep_advancing_rejoin_refused"
)


def main() -> int:
    env = {**os.environ, "SFU_GEOFENCE_PICTURES": str(ROOT / "docs"), "CI": "true"}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", TEST], cwd=ROOT, env=env, check=False
    ).returncode


if __name__ == "__main__":
    sys.exit(main())
