"""Benchmark reporting: one table on the terminal and one JSON file with the run's context.

``save(name, parameters=..., results=...)`` writes ``benchmarks/results/<name>.json`` with the
machine, date, git commit, parameters and results, so figures can be compared across runs.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO / "benchmarks" / "results"
_PACKAGES = ("torch", "sentence-transformers", "transformers", "lancedb", "pylance", "pyarrow", "numpy")


def machine() -> dict[str, Any]:
    """What the figures were measured on (the load average matters: the machine may be shared)."""
    info: dict[str, Any] = {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "packages": {},
    }
    for package in _PACKAGES:
        try:
            info["packages"][package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    if "torch" in sys.modules:
        info["torch_threads"] = sys.modules["torch"].get_num_threads()
    return info


def git_commit() -> dict[str, Any]:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False).stdout.strip()

    return {"commit": git("rev-parse", "HEAD") or None,
            "dirty_paths": len([line for line in git("status", "--porcelain").splitlines() if line.strip()])}


def percentiles_ms(seconds: Sequence[float]) -> dict[str, float]:
    """p50 / p90 / p99 / mean of latencies given in seconds, in milliseconds."""
    ordered = sorted(seconds)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))] * 1000

    return {"p50_ms": round(pick(0.50), 3), "p90_ms": round(pick(0.90), 3), "p99_ms": round(pick(0.99), 3),
            "mean_ms": round(statistics.fmean(ordered) * 1000, 3), "n": len(ordered)}


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], notes: Sequence[str] = ()) -> None:
    """A rich table when rich is installed, aligned plain text otherwise."""
    cells = [[_format(v) for v in row] for row in rows]
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        widths = [max(len(str(c)), *(len(r[i]) for r in cells)) if cells else len(str(c))
                  for i, c in enumerate(columns)]
        print(f"\n{title}")
        print("  ".join(str(c).ljust(w) for c, w in zip(columns, widths, strict=True)))
        for row in cells:
            print("  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)))
        for note in notes:
            print(f"  {note}")
        return
    table = Table(title=title, title_justify="left")
    for i, column in enumerate(columns):
        table.add_column(str(column), justify="left" if i == 0 else "right")
    for row in cells:
        table.add_row(*row)
    console = Console(width=max(120, Console().width))
    console.print(table)
    for note in notes:
        console.print(f"  {note}", highlight=False)


def save(name: str, *, parameters: dict[str, Any], results: Any, notes: Sequence[str] = (),
         started: datetime | None = None) -> Path:
    """Write ``benchmarks/results/<name>.json``; returns its path."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    record = {
        "benchmark": name,
        "started": (started or datetime.now(UTC)).isoformat(timespec="seconds"),
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "git": git_commit(),
        "machine": machine(),
        "parameters": parameters,
        "results": results,
        "notes": list(notes),
    }
    path.write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"wrote {path.relative_to(REPO)}")
    return path


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.4f}" if abs(value) < 10 else f"{value:,.1f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float | None:
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return None
    return round(pages * size / 2**30, 1)
