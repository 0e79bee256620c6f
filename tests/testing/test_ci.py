"""What a test lacking its tools does: skip with the reason locally, fail with it under CI=true."""

from __future__ import annotations

import pytest

from sfu_geofence.testing.ci import running_in_ci, skip_or_fail
from sfu_geofence.testing.coturn import COTURN_MISSING


@pytest.mark.parametrize(("ci", "expected"), [(None, False), ("", False), ("true", True), ("1", True)])
def test_running_in_ci_reads_the_ci_variable(
    monkeypatch: pytest.MonkeyPatch, ci: str | None, expected: bool
) -> None:
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    assert running_in_ci() is expected


def test_a_missing_turnserver_skips_locally_and_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install -y coturn"):
        skip_or_fail(COTURN_MISSING, kind="relay")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"CI=true: relay tests must run"):
        skip_or_fail(COTURN_MISSING, kind="relay")
