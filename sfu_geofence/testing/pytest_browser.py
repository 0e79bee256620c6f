"""pytest plugin for tests marked ``browser`` or ``lan``: run only ever in a namespace of their own.

A plain ``python -m pytest`` runs in the host namespace, where Chromium would gather and use this
machine's other addresses. So there the browser tests are not run in-process: the first of them to
come up starts one child ``python -m pytest <their node ids>`` inside a fresh network namespace with
only ``lo`` (:mod:`sfu_geofence.testing.netns`), and the child's own reports (pass, fail with its
traceback, skip) are replayed as the results of the outer items. The outer run therefore fails when a
browser test fails, and shows why. Tests marked ``lan`` (browser tests or not) go the same way to a
second child, in a *LAN namespace*: ``lo`` plus a dummy interface holding 198.18.0.1/24 and
2001:db8::1/64, standing in for a network card (a stock browser's addresses, IPv6 beyond ::1).

When the namespace cannot be created (not root, no ``unshare``) or Chromium is missing, the browser
tests are skipped with the reason, unless ``CI=true``: then they fail, because CI must run them.

Also provides the fixtures browser tests use: ``chromium`` (one browser per session) and
``open_page`` (a new participant, i.e. a fresh browser context, per call). Browser tests run in
pytest-asyncio's session event loop, where the browser lives; their own async fixtures need
``loop_scope="session"`` too.
"""

from __future__ import annotations

import builtins
import importlib.util
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pytest
import pytest_asyncio
from pytest_asyncio import is_async_test

from .ci import running_in_ci, skip_or_fail
from .netns import Namespace, current_namespace, namespace_command, namespace_unavailable

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page

__all__ = ["OpenPage", "environment_problem", "running_in_ci", "skip_or_fail"]

BROWSER_MARK = "browser"
LAN_MARK = "lan"
LAN_MARKER = (
    f"{LAN_MARK}: runs in a network namespace with lo and a dummy interface (198.18.0.1/24, "
    "2001:db8::1/64), a child pytest of its own"
)

RESULTS_ENV = "SFU_GEOFENCE_BROWSER_RESULTS"
"""Set for the child run: the file its reports are appended to, one JSON object per line."""


class OpenPage(Protocol):
    """The ``open_page`` fixture: ``await open_page(url)`` is a new participant showing ``url``."""

    async def __call__(self, url: str, *, forwarded_for: str | None = None, camera: bool = True) -> Page:
        """Open ``url`` in a fresh context (camera granted unless told not to); see
        ``browser.new_participant_context``."""
        ...


def environment_problem(namespace: Namespace = Namespace.LOOPBACK, *, browser: bool = True) -> str | None:
    """Why tests in that kind of namespace (with Chromium if ``browser``) cannot run here, or None."""
    unavailable = namespace_unavailable(namespace)
    if unavailable is not None:
        return unavailable
    if not browser:
        return None
    if importlib.util.find_spec("playwright") is None:
        return "playwright is not installed: python -m pip install -e '.[test]'"
    from .browser import CHROMIUM_MISSING, find_chromium

    return CHROMIUM_MISSING if find_chromium() is None else None


@dataclass
class _ChildRun:
    """Tests of this session run by one child pytest inside a fresh namespace of one kind."""

    namespace: Namespace
    nodeids: list[str]
    browser: bool
    """Whether any of them needs Chromium."""
    started: bool = False
    problem: str | None = None
    returncode: int | None = None
    output: str = ""
    seconds: float = 0.0
    reports: dict[str, list[pytest.TestReport]] = field(default_factory=dict)
    collect_errors: list[pytest.CollectReport] = field(default_factory=list)

    def run(self, config: pytest.Config) -> None:
        self.started = True
        self.problem = environment_problem(self.namespace, browser=self.browser)
        if self.problem is not None:
            return
        with tempfile.TemporaryDirectory(prefix="sfu-geofence-browser-") as scratch:
            results = Path(scratch) / "reports.jsonl"
            results.touch()
            started = time.monotonic()
            self._run_child(config, results)
            self.seconds = time.monotonic() - started
            for line in results.read_text().splitlines():
                self._replay(config, json.loads(line))

    def _run_child(self, config: pytest.Config, results: Path) -> None:
        try:
            per_test = float(config.getini("timeout") or 300)  # pytest-timeout's setting
        except ValueError:
            per_test = 300.0
        argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", f"--rootdir={config.rootpath}"]
        if config.inipath is not None:
            argv += ["-c", str(config.inipath)]
        try:
            child = subprocess.run(
                namespace_command([*argv, *self.nodeids], self.namespace),
                cwd=config.rootpath,
                env={**os.environ, RESULTS_ENV: str(results)},
                capture_output=True,
                text=True,
                timeout=per_test * len(self.nodeids) + 120,
                check=False,
            )
        except subprocess.TimeoutExpired as expired:
            # run() has killed unshare; --kill-child then ends every process in the namespace.
            self.output = (
                f"{_text(expired.stdout)}{_text(expired.stderr)}\n(killed after {expired.timeout:g} s)"
            )
            return
        self.returncode, self.output = child.returncode, child.stdout + child.stderr

    def _replay(self, config: pytest.Config, data: dict[str, Any]) -> None:
        if "warning" in data:
            _replay_warning(config, data["warning"])
            return
        if isinstance(data.get("longrepr"), list):  # a skip's (path, line, reason): JSON made it a list
            data["longrepr"] = tuple(data["longrepr"])
        report = config.hook.pytest_report_from_serializable(config=config, data=data)
        if isinstance(report, pytest.TestReport):
            self.reports.setdefault(report.nodeid, []).append(report)
        elif isinstance(report, pytest.CollectReport):
            self.collect_errors.append(report)

    def reports_for(self, item: pytest.Item) -> list[pytest.TestReport]:
        if self.problem is not None:
            kind = "browser" if item.get_closest_marker(BROWSER_MARK) else self.namespace.name
            reason = f"{kind.lower()} test not run: {self.problem}"
            if running_in_ci():
                return _failed(item, f"{reason} (CI=true: {kind.lower()} tests must run)")
            return _skipped(item, reason)
        reports = self.reports.get(item.nodeid)
        if reports:
            return reports
        return _failed(
            item,
            f"the child pytest in the network namespace (exit status {self.returncode}) reported nothing "
            f"for this test; its output:\n{self.output}",
        )

    @property
    def complete(self) -> bool:
        return (
            self.returncode in (0, 1) and not self.collect_errors and set(self.nodeids) <= set(self.reports)
        )


_CHILD_RUNS = pytest.StashKey[list[_ChildRun]]()


def _replay_warning(config: pytest.Config, warning: dict[str, Any]) -> None:
    """Show a warning of the child run in this run's warnings summary."""
    category = getattr(builtins, warning["category"], None)
    message = warning["message"]
    if not (isinstance(category, type) and issubclass(category, Warning)):
        category, message = UserWarning, f"{warning['category']}: {message}"
    config.hook.pytest_warning_recorded.call_historic(
        kwargs={
            "warning_message": warnings.WarningMessage(
                category(message), category, warning["filename"], warning["lineno"]
            ),
            "when": warning["when"],
            "nodeid": warning["nodeid"],
            "location": None,
        }
    )


def _text(output: str | bytes | None) -> str:
    if isinstance(output, bytes):
        return output.decode(errors="replace")
    return output or ""


def _report(item: pytest.Item, when: str, outcome: str, longrepr: Any = None) -> pytest.TestReport:
    return pytest.TestReport(
        item.nodeid,
        item.location,
        dict.fromkeys(item.keywords, 1),
        outcome,  # type: ignore[arg-type]
        longrepr,
        when,  # type: ignore[arg-type]
    )


def _skipped(item: pytest.Item, reason: str) -> list[pytest.TestReport]:
    where = (str(item.path), (item.location[1] or 0) + 1, f"Skipped: {reason}")
    return [_report(item, "setup", "skipped", where), _report(item, "teardown", "passed")]


def _failed(item: pytest.Item, message: str) -> list[pytest.TestReport]:
    return [
        _report(item, "setup", "passed"),
        _report(item, "call", "failed", message),
        _report(item, "teardown", "passed"),
    ]


def namespace_of(item: pytest.Item) -> Namespace | None:
    """The kind of namespace a test must run in: ``lan`` marks a LAN one, ``browser`` a loopback-only one."""
    if item.get_closest_marker(LAN_MARK):
        return Namespace.LAN
    return Namespace.LOOPBACK if item.get_closest_marker(BROWSER_MARK) else None


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Put browser tests in the session loop; tests of another namespace go to a child run of it."""
    for item in items:
        if item.get_closest_marker(BROWSER_MARK) and is_async_test(item):
            item.add_marker(pytest.mark.asyncio(loop_scope="session"), append=False)
    if RESULTS_ENV in os.environ:
        return  # the child run: given exactly the tests of its namespace
    here = current_namespace()
    runs: list[_ChildRun] = []
    for namespace in Namespace:
        elsewhere = [item for item in items if namespace_of(item) is namespace and namespace is not here]
        if not elsewhere:
            continue
        for item in elsewhere:
            # The child run has its own per-test timeouts and an overall one; none around the replay.
            item.add_marker(pytest.mark.timeout(0))
        browser = any(item.get_closest_marker(BROWSER_MARK) for item in elsewhere)
        runs.append(_ChildRun(namespace, [item.nodeid for item in elsewhere], browser))
    if runs:
        config.stash[_CHILD_RUNS] = runs


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> bool | None:
    runs = item.config.stash.get(_CHILD_RUNS, [])
    child_run = next((run for run in runs if item.nodeid in run.nodeids), None)
    if child_run is None:
        return None
    if not child_run.started:
        child_run.run(item.config)
    item.ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    for report in child_run.reports_for(item):
        item.ihook.pytest_runtest_logreport(report=report)
    # What pytest's own teardown phase would do: leave set up only what ``nextitem`` needs, so an
    # in-process test of this module before the replayed one does not keep its module set up.
    item.session._setupstate.teardown_exact(nextitem)
    item.ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
    return True


class _ReportRecorder:
    """In the child run: appends every test report, and failed collections, to the results file."""

    def __init__(self, config: pytest.Config, path: str) -> None:
        self._config = config
        self._path = path

    def _record(self, report: pytest.TestReport | pytest.CollectReport) -> None:
        data = self._config.hook.pytest_report_to_serializable(config=self._config, report=report)
        with open(self._path, "a", encoding="utf-8") as results:
            results.write(json.dumps(data) + "\n")

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self._record(report)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self._record(report)

    def pytest_warning_recorded(
        self, warning_message: warnings.WarningMessage, when: str, nodeid: str, location: object
    ) -> None:
        warning = {
            "category": warning_message.category.__name__,
            "message": str(warning_message.message),
            "filename": warning_message.filename,
            "lineno": warning_message.lineno,
            "when": when,
            "nodeid": nodeid,
        }
        with open(self._path, "a", encoding="utf-8") as results:
            results.write(json.dumps({"warning": warning}) + "\n")


def pytest_configure(config: pytest.Config) -> None:
    if not any(line.startswith(f"{LAN_MARK}:") for line in config.getini("markers")):
        config.addinivalue_line("markers", LAN_MARKER)  # a project of its own may not declare it
    path = os.environ.get(RESULTS_ENV)
    if path is not None:
        config.pluginmanager.register(_ReportRecorder(config, path), "sfu-geofence-browser-recorder")


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    for child_run in config.stash.get(_CHILD_RUNS, []):
        if not child_run.started or child_run.problem is not None:
            continue
        namespace = child_run.namespace.value
        terminalreporter.section(f"tests in a network namespace with {namespace} (child pytest)")
        command = shlex.join(namespace_command(["python", "-m", "pytest"], child_run.namespace))
        terminalreporter.line(
            f"{len(child_run.nodeids)} test(s) run by `{command} ...`: "
            f"exit status {child_run.returncode}, {child_run.seconds:.1f} s"
        )
        if not child_run.complete:
            terminalreporter.line("child output:")
            terminalreporter.line(child_run.output)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def chromium() -> AsyncIterator[Browser]:
    """One headless Chromium for the session (fake camera and microphone), in a test namespace only:
    with the loopback switch where there is only lo, as shipped in a LAN namespace."""
    if current_namespace() is None:
        pytest.fail(
            "browser tests run only inside a network namespace of their own, which plain "
            f"`python -m pytest` arranges (this process has {RESULTS_ENV} set but other interfaces)",
            pytrace=False,
        )
    from playwright.async_api import async_playwright

    from .browser import CHROMIUM_MISSING, find_chromium, launch_chromium

    executable = find_chromium()
    if executable is None:
        skip_or_fail(CHROMIUM_MISSING)
    async with async_playwright() as playwright:
        browser = await launch_chromium(playwright.chromium, executable)
        try:
            yield browser
        finally:
            await browser.close()


@pytest_asyncio.fixture(loop_scope="session")
async def open_page(chromium: Browser) -> AsyncIterator[OpenPage]:
    """Factory of participants: each call opens ``url`` in a fresh context; all closed afterwards.

    ``camera=False`` opens it in a second Chromium (launched on first use) whose camera and
    microphone prompts are never granted: a viewer who grants nothing, hidden behind mDNS names.
    """
    from .browser import find_chromium, launch_chromium, new_participant_context

    contexts = []
    ungranted: list[Browser] = []

    async def open_participant(url: str, *, forwarded_for: str | None = None, camera: bool = True) -> Page:
        browser = chromium
        if not camera:
            if not ungranted:
                executable = find_chromium()
                assert executable is not None  # the chromium fixture found it
                ungranted.append(await launch_chromium(chromium.browser_type, executable, grant_media=False))
            browser = ungranted[0]
        context = await new_participant_context(browser, forwarded_for=forwarded_for, camera=camera)
        contexts.append(context)
        page = await context.new_page()
        await page.goto(url)
        return page

    yield open_participant
    for context in contexts:
        await context.close()
    for browser in ungranted:
        await browser.close()
