"""Summarise, from a state directory's audit log, who was refused or ejected, from where, in which room,
under which rule and since when, and every policy change with who made it and why.

Reads ``DIR/audit.sqlite`` read-only: safe on a running server's directory, or on a copy. Output: text
(default), ``--json``, ``--csv`` (one row per count and per policy change), or ``--png`` (a plot of
refusals and ejections per day and country, to ``--output``). See docs/operations.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from ..core.transparency import DIMENSIONS, ExclusionKind, TransparencyReport, read_report
from ..server.state import AUDIT_FILE

NAME = "report"
HELP = "transparency report: refusals, ejections and policy changes from a state directory's audit log"

CSV_COLUMNS = (
    "record",
    "day",
    "time",
    "room",
    "country",
    "trigger",
    "count",
    "rule",
    "version",
    "actor",
    "reason",
)
PLOT_HINT = "the plot needs matplotlib: pip install 'sfu-geofence[loadtest]'"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--state-dir", required=True, type=Path, metavar="DIR", help="serve's --state-dir")
    parser.add_argument(
        "--since",
        required=True,
        type=_since,
        metavar="DATE",
        help="first day (YYYY-MM-DD) or time (ISO 8601; without a zone: UTC) to count",
    )
    formats = parser.add_mutually_exclusive_group()
    formats.add_argument("--json", action="store_const", dest="format", const="json", help="JSON")
    formats.add_argument("--csv", action="store_const", dest="format", const="csv", help="CSV")
    formats.add_argument(
        "--png", action="store_const", dest="format", const="png", help="a plot (needs --output)"
    )
    parser.add_argument(
        "--output", "-o", type=Path, metavar="FILE", help="write here (default: standard output)"
    )


def _since(text: str) -> datetime:
    try:
        since = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD) or an ISO 8601 time") from None
    return since if since.tzinfo else since.replace(tzinfo=UTC)


def run(args: argparse.Namespace) -> int:
    if args.format == "png" and args.output is None:
        raise ValueError("--png writes a file: give it with --output FILE")
    report = read_report(args.state_dir / AUDIT_FILE, args.since)
    if args.format == "png":
        if not write_plot(report, args.output):
            print(f"sfu-geofence report: error: {PLOT_HINT}", file=sys.stderr)
            return 2
        return 0
    if args.output is None:
        _write(report, args.format, sys.stdout)
    else:
        with args.output.open("w", newline="") as out:
            _write(report, args.format, out)
    return 0


def _write(report: TransparencyReport, form: str | None, out: IO[str]) -> None:
    if form == "json":
        json.dump(report.to_json(), out, indent=2)
        out.write("\n")
    elif form == "csv":
        write_csv(report, out)
    else:
        write_text(report, out)


def write_csv(report: TransparencyReport, out: IO[str]) -> None:
    """One row per count (``record`` refusal/ejection) and one per policy change (``policy_change``)."""
    writer = csv.DictWriter(out, CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for e in report.exclusions:
        row = {"record": e.kind, "day": e.day.isoformat(), "room": e.room, "country": e.country}
        writer.writerow(row | {"trigger": e.trigger, "count": e.count})
    for c in report.policy_changes:
        writer.writerow(
            {
                "record": "policy_change",
                "day": c.time.date().isoformat(),
                "time": c.time.isoformat(),
                "room": c.room if c.room is not None else "(default)",
                "rule": c.rule,
                "version": c.version,
                "actor": c.actor,
                "reason": c.reason,
            }
        )


def write_text(report: TransparencyReport, out: IO[str]) -> None:
    out.write(f"sfu-geofence transparency report: since {report.since.isoformat()}\n")
    kinds: tuple[ExclusionKind, ...] = ("refusal", "ejection")
    for kind in kinds:
        _write_counts(report, kind, out)
    out.write(f"\npolicy changes: {len(report.policy_changes)}\n")
    for c in report.policy_changes:
        room = f"room {c.room}" if c.room is not None else "server default"
        who = f" by {c.actor}" if c.actor else " (actor not given)"
        why = f": {c.reason}" if c.reason else ""
        out.write(f"  {c.time:%Y-%m-%d %H:%M:%S}Z  {room}  -> {c.rule}{who}{why}\n")


def _write_counts(report: TransparencyReport, kind: ExclusionKind, out: IO[str]) -> None:
    out.write(f"\n{kind}s: {report.total(kind)}\n")
    for dimension in DIMENSIONS:
        counts = report.by(kind, dimension)
        if counts:
            out.write(f"  by {dimension}: " + ", ".join(f"{value} {n}" for value, n in counts.items()) + "\n")


def write_plot(report: TransparencyReport, path: Path) -> bool:
    """Refusals and ejections per day, stacked by country; False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    figure, panels = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    days = sorted({e.day for e in report.exclusions})
    kinds: tuple[ExclusionKind, ...] = ("refusal", "ejection")
    for panel, kind in zip(panels, kinds, strict=True):
        countries = sorted({e.country for e in report.exclusions if e.kind == kind})
        bottom = [0] * len(days)
        for country in countries:
            heights = [
                sum(e.count for e in report.exclusions if (e.kind, e.day, e.country) == (kind, day, country))
                for day in days
            ]
            panel.bar([d.isoformat() for d in days], heights, bottom=bottom, label=country)
            bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
        panel.set_ylabel(f"{kind}s")
        panel.set_title(f"{kind}s per day (UTC) by country: {report.total(kind)}")
        if countries:
            panel.legend(loc="upper left", fontsize="small")
    figure.suptitle(
        f"sfu-geofence since {report.since:%Y-%m-%d}: {len(report.policy_changes)} policy changes"
    )
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    plt.close(figure)
    return True
