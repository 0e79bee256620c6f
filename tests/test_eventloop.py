"""The commands and benchmarks run on uvloop unless a flag or the environment turns it off."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable

import pytest
import uvloop

from sfu_geofence import eventloop
from sfu_geofence.commands import demo, serve


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, True),
        ("1", True),
        ("yes", True),
        ("0", False),
        ("false", False),
        (" OFF ", False),
        ("no", False),
    ],
)
def test_uvloop_is_on_unless_the_environment_says_otherwise(value: str | None, expected: bool) -> None:
    environ = {} if value is None else {eventloop.ENV_UVLOOP: value}
    assert eventloop.uvloop_enabled(environ) is expected


@pytest.mark.parametrize("configure", [serve.add_arguments, demo.configure])
def test_serve_and_demo_take_no_uvloop(
    configure: Callable[[argparse.ArgumentParser], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(eventloop.ENV_UVLOOP, raising=False)
    parser = argparse.ArgumentParser()
    configure(parser)
    assert parser.parse_args([]).uvloop is True
    assert parser.parse_args(["--no-uvloop"]).uvloop is False
    monkeypatch.setenv(eventloop.ENV_UVLOOP, "0")
    parser = argparse.ArgumentParser()
    configure(parser)
    assert parser.parse_args([]).uvloop is False


@pytest.mark.parametrize(("use_uvloop", "name"), [(True, "uvloop"), (False, "asyncio")])
def test_run_uses_the_loop_it_is_told(use_uvloop: bool, name: str) -> None:
    async def main() -> tuple[str, bool]:
        return eventloop.running_loop_name(), isinstance(asyncio.get_running_loop(), uvloop.Loop)

    assert eventloop.run(main(), use_uvloop=use_uvloop) == (name, use_uvloop)
