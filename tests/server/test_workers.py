"""``serve --workers N``: how the flags become each worker's configuration (the processes themselves
run in tests/cluster/test_workers.py, with a real redis-server)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest

from sfu_geofence.commands.serve import add_arguments, config_from_args
from sfu_geofence.server.workers import worker_configs

REDIS = "unix:///tmp/x/redis.sock?db=0"


def _args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def test_each_worker_gets_the_next_ports_its_own_audit_directory_and_the_shared_redis() -> None:
    args = _args(["--workers", "3", "--port", "9000", "--state-dir", "/srv/state"])
    configs = worker_configs(config_from_args(args), args.workers, REDIS)
    assert [(c.port, c.admin_listener.port) for c in configs] == [(9000, 9003), (9001, 9004), (9002, 9005)]
    assert [c.state.directory for c in configs] == [Path(f"/srv/state/worker-{i}") for i in (1, 2, 3)]
    assert {c.redis_url for c in configs} == {REDIS}


def test_an_explicit_admin_port_starts_the_admin_range_and_port_0_picks_every_port() -> None:
    args = _args(["--workers", "2", "--port", "9000", "--admin-port", "9100"])
    assert [(c.port, c.admin_listener.port) for c in worker_configs(config_from_args(args), 2, REDIS)] == [
        (9000, 9100),
        (9001, 9101),
    ]
    args = _args(["--workers", "2", "--port", "0"])
    assert [(c.port, c.admin_listener.port) for c in worker_configs(config_from_args(args), 2, REDIS)] == [
        (0, 0),
        (0, 0),
    ]


def test_overlapping_public_and_admin_ports_are_refused_naming_a_free_start() -> None:
    args = _args(["--workers", "3", "--port", "9000", "--admin-port", "9002"])
    with pytest.raises(ValueError, match=r"public ports 9000-9002 and admin ports 9002-9004 overlap .*9003"):
        worker_configs(config_from_args(args), 3, REDIS)


def test_auto_is_one_worker_per_core_this_process_may_use(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SFU_GEOFENCE_WORKERS", raising=False)
    assert _args(["--workers", "auto"]).workers == len(os.sched_getaffinity(0))
    assert _args([]).workers == 1
