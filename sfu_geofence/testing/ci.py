"""Skip or fail: what a test does when the machine lacks something it needs (Chromium, coturn, root).

Locally such a test is skipped with the reason; under ``CI=true`` it fails, because CI must run it
(``.ci/run`` installs everything the tests need).
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def running_in_ci() -> bool:
    """True when ``CI`` says so: environment problems then fail tests instead of skipping them."""
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def skip_or_fail(reason: str, *, kind: str = "browser") -> NoReturn:
    """Skip with ``reason`` locally; fail with it under ``CI=true`` (``kind`` tests must run there)."""
    if running_in_ci():
        pytest.fail(f"{reason} (CI=true: {kind} tests must run)", pytrace=False)
    pytest.skip(reason)
