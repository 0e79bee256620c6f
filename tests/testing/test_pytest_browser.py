"""How a plain ``pytest`` runs tests marked ``browser``: in a child run, in a namespace with only lo."""

from __future__ import annotations

from pathlib import Path

import pytest

from sfu_geofence.testing.netns import Namespace, in_loopback_only_namespace
from sfu_geofence.testing.pytest_browser import environment_problem, skip_or_fail

REPOSITORY = Path(__file__).resolve().parents[2]

SESSION = """
import os
import socket

import pytest

def interfaces():
    return [name for _, name in socket.if_nameindex()]

def test_an_unmarked_test_runs_in_the_host_namespace():
    assert interfaces() != ["lo"]

@pytest.mark.browser
def test_a_browser_test_sees_only_lo_and_is_the_first_process_of_its_namespace():
    assert interfaces() == ["lo"]
    assert os.getpid() == 1

@pytest.mark.browser
def test_a_failing_browser_test():
    assert 6 * 7 == 43, "inner failure shown outside"

@pytest.mark.browser
def test_a_skipping_browser_test():
    pytest.skip("inner skip reason shown outside")
"""


@pytest.fixture
def session(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A project whose conftest loads the plugin from this checkout, with one module of tests."""
    monkeypatch.setenv("PYTHONPATH", str(REPOSITORY))
    pytester.makeini("[pytest]\naddopts = --strict-markers -rs\nmarkers =\n    browser: in Chromium\n")
    pytester.makeconftest('pytest_plugins = ["sfu_geofence.testing.pytest_browser"]\n')
    pytester.makepyfile(test_session=SESSION)
    return pytester


def test_browser_tests_run_in_one_child_pytest_in_a_namespace_and_report_as_if_run_here(
    session: pytest.Pytester,
) -> None:
    if in_loopback_only_namespace():
        pytest.skip("already in a namespace with only lo: nothing is handed to a child run")
    problem = environment_problem()
    if problem is not None:
        skip_or_fail(problem)
    result = session.runpytest_subprocess("-v")
    result.assert_outcomes(passed=2, failed=1, skipped=1)
    result.stdout.fnmatch_lines(
        [
            "*test_an_unmarked_test_runs_in_the_host_namespace PASSED*",
            "*test_a_browser_test_sees_only_lo_and_is_the_first_process_of_its_namespace PASSED*",
            "*test_a_failing_browser_test FAILED*",
            "*AssertionError: inner failure shown outside*",
            "*3 test(s) run by `unshare --net*: exit status 1*",
            "SKIPPED*inner skip reason shown outside",
        ]
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED


@pytest.mark.parametrize(("ci", "outcome"), [(None, "skipped"), ("true", "failed")])
def test_without_a_namespace_browser_tests_skip_with_the_reason_but_fail_under_ci(
    session: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, ci: str | None, outcome: str
) -> None:
    if in_loopback_only_namespace():
        pytest.skip("already in a namespace with only lo: nothing is handed to a child run")
    monkeypatch.setenv("PATH", str(session.path))  # no unshare, no ip
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    result = session.runpytest_subprocess()
    result.assert_outcomes(passed=1, **{outcome: 3})
    result.stdout.fnmatch_lines(["*browser test not run: unshare and ip not found*"])


LAN_SESSION = """
import socket

import pytest

from sfu_geofence.testing.netns import LAN_INTERFACE, in_lan_namespace


@pytest.fixture(scope="module")
def module_resource():
    yield "set up once per module"


def test_an_unmarked_test_here(module_resource):
    assert not in_lan_namespace()


@pytest.mark.lan
def test_a_lan_test_sees_lo_and_the_dummy_interface(module_resource):
    assert sorted(name for _, name in socket.if_nameindex()) == sorted(["lo", LAN_INTERFACE])
    assert in_lan_namespace()
"""

NEXT_MODULE = """
def test_the_next_module_sets_up_cleanly():
    pass
"""


def test_lan_tests_run_in_a_lan_namespace_child_and_the_next_module_still_sets_up(
    session: pytest.Pytester,
) -> None:
    if in_loopback_only_namespace():
        pytest.skip("in a namespace already: nothing is handed to a child run")
    session.makepyfile(test_lan=LAN_SESSION, test_next=NEXT_MODULE)
    problem = environment_problem(Namespace.LAN, browser=False)
    if problem is not None:
        skip_or_fail(problem)
    result = session.runpytest_subprocess("-v", "test_lan.py", "test_next.py")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["*1 test(s) run by `unshare --net*sfugf-lan type dummy*: exit status 0*"])


def test_a_replayed_test_between_two_modules_leaves_the_next_one_set_up_cleanly(
    session: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A module that mixes in-process and replayed tests: replaying tears down what pytest would."""
    if in_loopback_only_namespace():
        pytest.skip("in a namespace already: nothing is handed to a child run")
    session.makepyfile(test_lan=LAN_SESSION, test_next=NEXT_MODULE)
    monkeypatch.setenv("PATH", str(session.path))  # no unshare: the lan test is replayed as skipped
    monkeypatch.delenv("CI", raising=False)
    result = session.runpytest_subprocess("test_lan.py", "test_next.py")
    result.assert_outcomes(passed=2, skipped=1)
