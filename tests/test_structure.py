"""The layering the README promises, read from the source: who may import whom, and who may reach into
aiortc/aioice internals (only ``rtc/``)."""

from __future__ import annotations

import ast
import functools
from dataclasses import dataclass
from pathlib import Path

import aioice
import aiortc
import pytest

import sfu_geofence

PACKAGE = Path(sfu_geofence.__file__).parent
FORBIDDEN_IN_CORE = ("aiortc", "aioice", "aiohttp", "redis")


@dataclass(frozen=True)
class Module:
    """One source file of the package: its dotted name and its syntax tree."""

    name: str
    tree: ast.Module

    @property
    def package(self) -> str:
        """The subpackage it belongs to (``sfu``, ``core``, ...), or ``""`` for a top-level module."""
        parts = self.name.split(".")
        return parts[1] if len(parts) > 2 else ""


def parse(name: str, source: str) -> Module:
    return Module(name, ast.parse(source))


def package_modules() -> list[Module]:
    modules = []
    for path in sorted(PACKAGE.rglob("*.py")):
        dotted = ".".join(("sfu_geofence", *path.relative_to(PACKAGE).with_suffix("").parts))
        modules.append(parse(dotted, path.read_text()))
    return modules


def imported_modules(module: Module) -> set[str]:
    """Every module ``module`` imports, anywhere in it (lazy imports too), relative ones made absolute."""
    found: set[str] = set()
    package = module.name.split(".")[:-1]  # a module's package; for ``x.__init__``, ``x`` itself
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                prefix = ".".join(package[: len(package) - node.level + 1])
                target = f"{prefix}.{node.module}" if node.module else prefix
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return found


@functools.cache
def aiortc_private_names() -> frozenset[str]:
    """Private attribute and method names of aiortc's and aioice's own objects (read from their source)."""
    names: set[str] = set()
    for library in (aiortc, aioice):
        for path in Path(library.__file__).parent.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if (
                    isinstance(node, ast.Attribute)
                    and isinstance(node.value, ast.Name)
                    and node.value.id == "self"
                ):
                    names.add(node.attr)
                elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    names.add(node.name)
    return frozenset(n for n in names if n.startswith("_") and not n.startswith("__"))


def private_reaches(module: Module) -> list[str]:
    """``x._name`` (or ``getattr``/``setattr`` of ``"_name"``) where ``_name`` is private to aiortc/aioice."""
    private = aiortc_private_names()
    found = []
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Attribute) and node.attr in private:
            if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                found.append(f"{module.name}:{node.lineno}: {ast.unparse(node)}")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "setattr", "hasattr")
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and node.args[1].value in private
        ):
            found.append(f"{module.name}:{node.lineno}: {ast.unparse(node)}")
    return found


def layering_breaches(module: Module) -> list[str]:
    """Imports that run against the layering: sfu/ up into core/ or server/, core/ into the network
    libraries, the Janus gate into the project's own media stack, product code into testing/."""
    breaches = []
    for target in sorted(imported_modules(module)):
        top = target.split(".")[0]
        sub = target.split(".")[1] if target.startswith("sfu_geofence.") and target.count(".") else ""
        if module.package == "sfu" and sub in ("core", "server"):
            breaches.append(f"{module.name} imports {target}: sfu/ sits below core/ and server/")
        if module.package == "core" and top in FORBIDDEN_IN_CORE:
            breaches.append(f"{module.name} imports {target}: core/ stays free of network libraries")
        if module.package == "janusgate" and (top in ("aiortc", "aioice") or sub in ("sfu", "rtc")):
            breaches.append(f"{module.name} imports {target}: Janus's media is Janus's, the gate is a host")
        if module.package != "testing" and sub == "testing":
            breaches.append(f"{module.name} imports {target}: product code does not depend on testing/")
    return breaches


def test_only_rtc_reaches_into_aiortc_and_aioice_internals() -> None:
    reaches = [r for m in package_modules() if m.package != "rtc" for r in private_reaches(m)]
    assert reaches == []


def test_imports_follow_the_layering() -> None:
    breaches = [b for m in package_modules() for b in layering_breaches(m)]
    assert breaches == []


PURE_FORWARDING = ("sfu_geofence.sfu.rtp_header", "sfu_geofence.sfu.continuity", "sfu_geofence.sfu.mlines")
"""The forwarding roles that are bytes and ints only (mediasoup's SeqManager, LiveKit's rtpmunger)."""


def network_imports(module: Module) -> list[str]:
    """What ``module`` imports from aiortc, aioice or any other package module (pure ones import neither)."""
    return sorted(
        t for t in imported_modules(module) if t.split(".")[0] in ("aiortc", "aioice", "sfu_geofence", "av")
    )


def test_rtp_rewriting_continuity_and_m_line_recycling_import_neither_aiortc_nor_the_rest() -> None:
    modules = {m.name: m for m in package_modules()}
    assert {name: network_imports(modules[name]) for name in PURE_FORWARDING} == {
        name: [] for name in PURE_FORWARDING
    }


def test_an_aiortc_import_in_a_pure_module_is_found() -> None:
    source = "from aiortc.rtp import RtpPacket\nfrom ..rtc.forwarding import ntp_now\n"
    assert network_imports(parse("sfu_geofence.sfu.continuity", source)) == [
        "aiortc.rtp",
        "aiortc.rtp.RtpPacket",
        "sfu_geofence.rtc.forwarding",
        "sfu_geofence.rtc.forwarding.ntp_now",
    ]


# The checks themselves, on sources that break the rules: a check that cannot fail proves nothing.


@pytest.mark.parametrize(
    "source",
    [
        "def f(transceiver):\n    return transceiver._codecs\n",
        "def f(sender):\n    sender._stream_id = 'a'\n",
        "def f(transport):\n    return getattr(transport, '_connection')\n",
    ],
)
def test_a_private_aiortc_attribute_outside_rtc_is_found(source: str) -> None:
    assert private_reaches(parse("sfu_geofence.sfu.consumer", source)) != []


def test_own_private_attributes_are_not_aiortc_ones() -> None:
    assert (
        private_reaches(parse("sfu_geofence.sfu.consumer", "def f(self):\n    return self._codecs\n")) == []
    )


@pytest.mark.parametrize(
    ("name", "source"),
    [
        ("sfu_geofence.sfu.room", "from ..core.policy import Policy\n"),
        ("sfu_geofence.sfu.room", "from sfu_geofence.server import app\n"),
        ("sfu_geofence.sfu.room", "def f():\n    from ..server.app import make\n"),
        ("sfu_geofence.core.policy", "import aiohttp\n"),
        ("sfu_geofence.core.policy", "from aiortc import RTCPeerConnection\n"),
        ("sfu_geofence.core.policy", "import redis.asyncio\n"),
        ("sfu_geofence.janusgate.gate", "from ..sfu.room import Room\n"),
        ("sfu_geofence.janusgate.proxy", "import aiortc\n"),
        ("sfu_geofence.commands.mkdb", "def f():\n    from ..testing.testdb import build_database\n"),
        ("sfu_geofence.loadtest.worker", "from ..testing import netguard\n"),
        ("sfu_geofence.cli", "from .testing.testdb import build_database\n"),
    ],
)
def test_an_import_against_the_layering_is_found(name: str, source: str) -> None:
    assert layering_breaches(parse(name, source)) != []


def test_imports_along_the_layering_pass() -> None:
    assert (
        layering_breaches(parse("sfu_geofence.sfu.room", "from ..rtc.forwarding import ForwardingSender\n"))
        == []
    )
    assert layering_breaches(parse("sfu_geofence.testing.server", "from ..server.app import make\n")) == []
    assert layering_breaches(parse("sfu_geofence.server.app", "from ..core.policy import Policy\n")) == []


def test_test_modules_have_distinct_names() -> None:
    # pytest's default import mode imports each test module by its bare name: two test_faults.py in
    # two directories stop the collection of the whole suite.
    names: dict[str, list[str]] = {}
    for path in Path(__file__).parent.rglob("test_*.py"):
        names.setdefault(path.name, []).append(str(path.relative_to(Path(__file__).parent)))
    assert {name: paths for name, paths in names.items() if len(paths) > 1} == {}
