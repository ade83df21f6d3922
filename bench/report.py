"""
Statistics, result tables and the Markdown page of a benchmark run.

Percentiles use the nearest-rank method: pN of n values is the value at rank
ceil(N/100 * n) in ascending order, so p99 of 200 runs is the second-largest.
"""

from __future__ import annotations

import dataclasses
import math
import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path

from bench.services import REPO_ROOT

# The heading of the provisioning latency part of docs/benchmarks.md.
PAGE_TITLE = "Benchmarks: provisioning latency"


def percentile(values: Sequence[float], fraction: float) -> float:
    """Return the nearest-rank percentile of `values`; `fraction` is in (0, 1], for example 0.95."""
    if not values:
        raise ValueError("percentile of no values is undefined")
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


@dataclasses.dataclass(frozen=True)
class Target:
    """Upper bounds, in milliseconds, that the chain's p50 and tail percentile should stay under."""

    p50_ms: float | None = None
    tail_ms: float | None = None

    def is_met(self, values_ms: Sequence[float], tail: float) -> bool:
        if self.p50_ms is not None and percentile(values_ms, 0.5) > self.p50_ms:
            return False
        return self.tail_ms is None or percentile(values_ms, tail) <= self.tail_ms

    def describe(self, tail: float) -> str:
        bounds = []
        if self.p50_ms is not None:
            bounds.append(f"p50 ≤ {self.p50_ms:g} ms")
        if self.tail_ms is not None:
            bounds.append(f"{tail_label(tail)} ≤ {self.tail_ms:g} ms")
        return ", ".join(bounds)


@dataclasses.dataclass(frozen=True)
class Row:
    """One measure of a table: the chain's and the baseline's values in milliseconds, and the chain's target."""

    measure: str
    chain_ms: Sequence[float]
    baseline_ms: Sequence[float]
    target: Target | None = None


@dataclasses.dataclass(frozen=True)
class Table:
    """Rows that share a tail percentile, for example the local measures with p99."""

    title: str
    tail: float
    rows: Sequence[Row]


def tail_label(tail: float) -> str:
    return f"p{tail * 100:g}"


def format_ms(value: float) -> str:
    return f"{value:.1f}" if abs(value) < 100 else f"{value:.0f}"


def render_table(table: Table) -> str:
    """Render `table` as a Markdown table, which also reads well as plain text."""
    tail = tail_label(table.tail)
    header = [
        "Measure (ms)", "Runs",
        "Chain p50", f"Chain {tail}", "Chain max",
        "Baseline p50", f"Baseline {tail}", "Baseline max",
        "Target (chain)",
    ]
    lines = [f"**{table.title}**", "", _markdown_row(header), _markdown_row(["---"] * len(header))]
    for row in table.rows:
        lines.append(_markdown_row(_cells(row, table.tail)))
    return "\n".join(lines)


def _cells(row: Row, tail: float) -> list[str]:
    target = "-"
    if row.target is not None:
        verdict = "met" if row.target.is_met(row.chain_ms, tail) else "missed"
        target = f"{row.target.describe(tail)}: {verdict}"
    return [
        row.measure,
        str(len(row.chain_ms)),
        format_ms(percentile(row.chain_ms, 0.5)),
        format_ms(percentile(row.chain_ms, tail)),
        format_ms(max(row.chain_ms)),
        format_ms(percentile(row.baseline_ms, 0.5)),
        format_ms(percentile(row.baseline_ms, tail)),
        format_ms(max(row.baseline_ms)),
        target,
    ]


def _markdown_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def describe_spread(values: Sequence[float]) -> str:
    """Return "median X (min A, max B)" of `values`, formatted as milliseconds."""
    return f"median {format_ms(statistics.median(values))} (min {format_ms(min(values))}, max {format_ms(max(values))})"


def render_page(facts: Mapping[str, str], tables: Sequence[Table], method: str, notes: Sequence[str]) -> str:
    """Return the whole Markdown page: facts about the machine and run, tables, method, notes."""
    parts = [
        f"# {PAGE_TITLE}",
        "",
        "The durable chain of Celery tasks (create, wait_running, probe_healthz, hand_off) against the "
        "approach it replaces, one task that polls harnessd every 2 seconds. "
        "`python -m bench.provisioning` measured these figures on real Celery workers, a real redis-server, "
        "a real Docker engine and hcloud-sim (a local simulator of the Hetzner API), and wrote this part of the page. Running it again replaces this part.",
        "",
        "## Machine and run",
        "",
        *(f"- {name}: {value}" for name, value in facts.items()),
        "",
        "## Results",
        "",
    ]
    for table in tables:
        parts += [render_table(table), ""]
    parts += ["## What is measured", "", method.strip(), "", "## Notes from this run", ""]
    parts += [f"- {note}" for note in notes]
    return "\n".join(parts) + "\n"


def replace_part(page: str, title: str, part: str) -> str:
    """
    Return `page` with the part headed `# {title}` replaced by `part`, or with `part` appended.

    A part runs from its level-1 heading to the next level-1 heading, so each
    benchmark rewrites only its own part of a shared page.
    """
    lines = page.splitlines(keepends=True)
    heading = f"# {title}"
    start = next((index for index, line in enumerate(lines) if line.rstrip("\n") == heading), None)
    if start is None:
        before = "".join(lines).rstrip("\n")
        return (before + "\n\n" if before else "") + part
    end = next((index for index in range(start + 1, len(lines)) if lines[index].startswith("# ")), len(lines))
    after = "".join(lines[end:])
    return "".join(lines[:start]) + part + ("\n" + after if after else "")


def code_version() -> str:
    """Return the commit the benchmark ran, noting uncommitted changes to the measured packages."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout.strip()
        changes = subprocess.run(["git", "status", "--porcelain", "--", "workers", "workflows"], cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return f"commit {commit}" + (" with uncommitted changes in workers/ or workflows/" if changes.strip() else "")


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        name, _, value = line.partition(":")
        if name.strip() == "model name":
            return value.strip()
    return platform.processor() or "unknown"


def load_average() -> str:
    return ", ".join(f"{value:.2f}" for value in os.getloadavg())


def machine_facts(command: str, argv: Sequence[str] | None, redis_version: str, docker_version: str) -> dict[str, str]:
    """Return the facts every benchmark page starts with: date, command, code, machine and versions."""
    import celery
    import kombu
    import redis

    arguments = list(sys.argv[1:] if argv is None else argv)
    return {
        "Date (UTC)": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "Command": "`" + " ".join([command, *arguments]) + "`",
        "Code": code_version(),
        "CPUs (nproc)": str(len(os.sched_getaffinity(0))),
        "CPU model": cpu_model(),
        "Kernel": platform.release(),
        "Python": platform.python_version(),
        "Celery / kombu / redis-py": f"{celery.__version__} / {kombu.__version__} / {redis.__version__}",
        "redis-server": f"{redis_version} (private, loopback, no persistence)",
        "Docker engine": f"{docker_version} (containers on the host network)",
    }
