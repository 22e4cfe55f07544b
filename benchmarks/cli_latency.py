"""How long the CLI takes, cold (a new process each time, as a user runs it).

Times ``llmfti --help``, ``llmfti search Q --mode fts``, ``--mode dense`` and ``--mode hybrid`` on a
small SQuAD index (built once in a temporary data dir), N runs each, rotating the order so no command
always runs first; reports best, median and worst wall-clock seconds, and for each command which heavy
modules its process imported (``python -X importtime``: torch, sentence_transformers, transformers,
lancedb, lance), so "fts loads no model" is checked, not assumed.

Goals (issue 13 §2, quiet machine): ``--mode fts`` <= 1 s without loading any model; dense/hybrid <= 4 s.

    python -m benchmarks.cli_latency            # 5 runs each
    python -m benchmarks.cli_latency --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import squad
from benchmarks.reporting import print_table, save

HEAVY = ("torch", "sentence_transformers", "transformers", "lancedb", "lance")
QUESTION = "Which NFL team represented the AFC at Super Bowl 50?"


def build(data_dir: Path, docs: int) -> int:
    from llmfti.config import load_settings
    from llmfti.index import VectorIndex
    from pipelines.index_build import build_index

    rows = [{"id": p.doc_id, "text": p.context} for p in list(squad.paragraphs())[:docs]]
    source = data_dir.parent / "squad_paragraphs.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    settings = load_settings(data_dir=data_dir)
    build_index(settings, [source])
    return VectorIndex.open(settings).count_rows()


def commands(exe: str) -> dict[str, list[str]]:
    return {
        "--help": [exe, "--help"],
        "search --mode fts": [exe, "search", QUESTION, "--mode", "fts"],
        "search --mode dense": [exe, "search", QUESTION, "--mode", "dense"],
        "search --mode hybrid": [exe, "search", QUESTION, "--mode", "hybrid"],
    }


def imported(argv: list[str], env: dict[str, str]) -> list[str]:
    """The heavy top-level modules ``argv`` imports (one extra run under ``-X importtime``)."""
    code = f"import sys; sys.argv = {['llmfti', *argv]!r}; from llmfti.cli.main import run; run()"
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", code], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{argv} failed under -X importtime ({proc.returncode}): {proc.stderr[-1000:]}")
    names = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    return [m for m in HEAVY if m in names]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="cold runs per command (best of N is reported)")
    parser.add_argument("--docs", type=int, default=200, help="SQuAD paragraphs to index")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="llmfti-bench-cli-"))
    try:
        data_dir = root / "data"
        start = time.perf_counter()
        chunks = build(data_dir, args.docs)
        print(f"index: {chunks} chunks of {args.docs} SQuAD paragraphs in {time.perf_counter() - start:.0f} s")
        env = {**os.environ, "LLMFTI_DATA_DIR": str(data_dir), "HF_HUB_OFFLINE": "1"}
        exe = str(Path(sys.executable).with_name("llmfti"))
        cmds = commands(exe)
        times: dict[str, list[float]] = {name: [] for name in cmds}
        names = list(cmds)
        for run in range(args.runs):
            for name in names[run % len(names):] + names[: run % len(names)]:
                start = time.perf_counter()
                proc = subprocess.run(cmds[name], env=env, capture_output=True, text=True)
                times[name].append(time.perf_counter() - start)
                if proc.returncode != 0:
                    raise SystemExit(f"{name} failed ({proc.returncode}): {proc.stderr[-2000:]}")
        heavy = {name: imported(cmds[name][1:], env) for name in cmds}
    finally:
        shutil.rmtree(root, ignore_errors=True)

    goals = {"--help": None, "search --mode fts": 1.0, "search --mode dense": 4.0, "search --mode hybrid": 4.0}
    results: dict[str, Any] = {}
    rows = []
    for name, values in times.items():
        best = min(values)
        results[name] = {"best_s": round(best, 3), "median_s": round(statistics.median(values), 3),
                         "worst_s": round(max(values), 3), "runs": [round(v, 3) for v in values],
                         "heavy_imports": heavy[name], "goal_s": goals[name],
                         "meets_goal": None if goals[name] is None else best <= goals[name]}
        rows.append([name, results[name]["best_s"], results[name]["median_s"], results[name]["worst_s"],
                     goals[name], ", ".join(heavy[name]) or "-"])
    load = os.getloadavg()
    notes = [f"{args.runs} cold runs each (new process), {chunks} chunks; load average {load[0]:.2f} {load[1]:.2f} "
             f"{load[2]:.2f} on {os.cpu_count()} cores"]
    print_table("CLI latency, cold", ["command", "best s", "median s", "worst s", "goal s", "heavy imports"], rows,
                notes)
    save("cli_latency", parameters=vars(args) | {"question": QUESTION, "chunks": chunks}, results=results,
         notes=notes)


if __name__ == "__main__":
    main()
