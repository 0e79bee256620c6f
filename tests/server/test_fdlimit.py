"""The open-file budget: the soft limit raised to the hard one, and the caps fitted under what remains."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from collections.abc import Callable

import pytest

from sfu_geofence.rtc.fanout import descriptors_per_socket
from sfu_geofence.server.caps import Caps
from sfu_geofence.server.fdlimit import RESERVED, FileBudget, fit_caps

PROBE = (
    "import json; from sfu_geofence.server.fdlimit import raise_open_file_limit as r; "
    "b = r(); import resource; print(json.dumps([b.before, b.soft, b.hard, "
    "resource.getrlimit(resource.RLIMIT_NOFILE)[0]]))"
)


def _limited(soft: int, hard: int | None = None) -> Callable[[], None]:
    def limit() -> None:
        resource.setrlimit(
            resource.RLIMIT_NOFILE, (soft, hard or resource.getrlimit(resource.RLIMIT_NOFILE)[1])
        )

    return limit


def _probe(limit: Callable[[], None]) -> list[int]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        capture_output=True,
        text=True,
        preexec_fn=limit,
        check=True,
        timeout=60,
    )
    return list(json.loads(done.stdout))


def test_a_process_started_with_the_common_service_limit_raises_it_to_the_hard_limit() -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard <= 1024:
        pytest.skip(f"the hard limit here is {hard}: nothing to raise")
    before, soft, reported_hard, in_force = _probe(_limited(1024))
    assert (before, soft, in_force) == (1024, reported_hard, reported_hard)


def test_a_hard_limit_of_1024_is_kept_and_the_caps_are_fitted_under_it() -> None:
    before, soft, hard, in_force = _probe(_limited(1024, 1024))
    assert (before, soft, hard, in_force) == (1024, 1024, 1024, 1024)
    budget = FileBudget(soft=1024, hard=1024, before=1024)
    fitted = fit_caps(Caps(), budget, sockets_per_participant=1)
    assert budget.capacity(Caps(), 1) > 1024  # the defaults would not fit
    assert budget.capacity(fitted, 1) <= 1024
    assert (fitted.websockets, fitted.participants, fitted.pending_joins) == (640, 320, 64)
    assert fitted.websockets_per_address == Caps().websockets_per_address  # per-address caps unchanged


def test_caps_that_fit_are_kept_and_a_budget_without_room_is_refused() -> None:
    roomy = FileBudget(soft=100_000, hard=100_000, before=1024)
    assert fit_caps(Caps(), roomy, sockets_per_participant=2) == Caps()
    with pytest.raises(ValueError, match="leaves no room for a single participant"):
        fit_caps(Caps(), FileBudget(soft=RESERVED + 1, hard=RESERVED + 1, before=RESERVED + 1), 1)


FITTED = (
    "import json; from sfu_geofence.server.app import ServerConfig; "
    "from sfu_geofence.server.serve import within_file_budget as w; c = ServerConfig(); "
    "f = w(c).caps; print(json.dumps([f.websockets, f.participants, len(c.ice.bind)]))"
)


def test_the_caps_fitted_at_start_up_leave_room_for_every_descriptor_a_participant_holds() -> None:
    # A participant's sockets cost what tests/sfu/test_producer.py measures (the C fan-out's own dup
    # included): the caps serve fits under a hard limit of 1 024 must hold at that cost.
    done = subprocess.run(
        [sys.executable, "-c", FITTED],
        capture_output=True,
        text=True,
        preexec_fn=_limited(1024, 1024),
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, (os.getcwd(), os.environ.get("PYTHONPATH")))),
        },
        check=True,
        timeout=60,
    )
    websockets, participants, addresses = json.loads(done.stdout.splitlines()[-1])
    per_participant = addresses * descriptors_per_socket()
    assert websockets + participants * per_participant + RESERVED <= 1024
