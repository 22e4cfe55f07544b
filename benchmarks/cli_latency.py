"""How long the CLI takes, cold (a new process each time, as a user runs it).

Times ``llmfti --help``, ``llmfti search Q --mode fts``, ``--mode dense`` and ``--mode hybrid`` on a
small SQuAD index (built once in a temporary data dir), N runs each, rotating the order so no command
always runs first; reports best, median and worst wall-clock seconds, and for each command which heavy
modules its process imported (``python -X importtime``: torch, sentence_transformers, transformers,
lancedb, lance), so "fts loads no model" is checked, not assumed.

Goals (issue 13 §2, quiet machine): ``--mode fts`` <= 1 s without loading any model; dense/hybrid <= 4 s.
Each mode is reported against its goal on its best and on its median run, with the load average before
and after the runs (the machine may be shared: a busy one is slower, never faster), and the median CPU
seconds (user + system) of the process, which is close to its wall-clock time on an idle machine. For reference it
also times what a cold ``import X`` alone costs for the heavy libraries (best of up to 3 runs).

    python -m benchmarks.cli_latency            # 5 runs each
    python -m benchmarks.cli_latency --runs 3 --docs 50
"""

from __future__ import annotations

import argparse
import json
import os
import resource
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
GOALS = {"--help": None, "search --mode fts": 1.0, "search --mode dense": 4.0, "search --mode hybrid": 4.0}
REFERENCE_IMPORTS = ("numpy", "lance", "lancedb", "torch", "sentence_transformers")
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


# The same searches the way the CLI ran them before its fast path (VectorIndex: lancedb + sentence-transformers),
# without the CLI's own start-up: a lower bound of the old `llmfti search`, measured in the same run.
FULL_PATH = ("import sys; from llmfti.config import load_settings; from llmfti.index import VectorIndex; "
             "print(len(VectorIndex.open(load_settings()).search(sys.argv[1], mode=sys.argv[2]).hits))")


def full_path_commands() -> dict[str, list[str]]:
    return {f"before: VectorIndex {mode}": [sys.executable, "-c", FULL_PATH, QUESTION, mode]
            for mode in ("fts", "dense")}


def imported(argv: list[str], env: dict[str, str]) -> list[str]:
    """The heavy top-level modules ``argv`` imports (one extra run under ``-X importtime``)."""
    code = f"import sys; sys.argv = {['llmfti', *argv]!r}; from llmfti.cli.main import run; run()"
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", code], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{argv} failed under -X importtime ({proc.returncode}): {proc.stderr[-1000:]}")
    names = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    return [m for m in HEAVY if m in names]


def timed(name: str, argv: list[str], env: dict[str, str], times: dict[str, list[float]],
          cpu: dict[str, list[float]]) -> None:
    """Run ``argv`` once; append its wall-clock and CPU (user + system) seconds."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True)
    times[name].append(time.perf_counter() - start)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu[name].append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed ({proc.returncode}): {proc.stderr[-2000:]}")


def import_costs(runs: int) -> dict[str, float]:
    """Best wall-clock seconds of ``python -c "import X"`` (a new process each time) per heavy library."""
    costs = {}
    for module in REFERENCE_IMPORTS:
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", f"import {module}"], check=True, capture_output=True)
            times.append(time.perf_counter() - start)
        costs[module] = round(min(times), 3)
    return costs


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
        load_before = os.getloadavg()
        times: dict[str, list[float]] = {name: [] for name in cmds}
        names = list(cmds)
        cpu: dict[str, list[float]] = {name: [] for name in cmds}
        for run in range(args.runs):
            for name in names[run % len(names):] + names[: run % len(names)]:
                timed(name, cmds[name], env, times, cpu)
        load_after = os.getloadavg()
        heavy = {name: imported(cmds[name][1:], env) for name in cmds}
        for name, argv in full_path_commands().items():  # fewer runs: each loads the model the slow way
            times[name], cpu[name], heavy[name] = [], [], []
            for _ in range(min(args.runs, 2)):
                timed(name, argv, env, times, cpu)
        references = import_costs(min(args.runs, 3))
    finally:
        shutil.rmtree(root, ignore_errors=True)

    results: dict[str, Any] = {}
    rows = []
    for name, values in times.items():
        best, median, goal = min(values), statistics.median(values), GOALS.get(name)
        results[name] = {"best_s": round(best, 3), "median_s": round(median, 3),
                         "worst_s": round(max(values), 3), "runs": [round(v, 3) for v in values],
                         "cpu_median_s": round(statistics.median(cpu[name]), 3),
                         "heavy_imports": heavy[name], "goal_s": goal,
                         "meets_goal_best": None if goal is None else best <= goal,
                         "meets_goal_median": None if goal is None else median <= goal}
        rows.append([name, results[name]["best_s"], results[name]["median_s"], results[name]["worst_s"],
                     results[name]["cpu_median_s"], goal if goal is not None else "-", _verdict(results[name]),
                     ", ".join(heavy[name]) or ("(not measured)" if name.startswith("before") else "-")])
    results["reference_import_s"] = references
    notes = [f"{args.runs} cold runs each (new process; the 'before' rows {min(args.runs, 2)}), {chunks} chunks, "
             f"{os.cpu_count()} cores; load average "
             f"(1/5/15 min) before the runs {_load(load_before)}, after {_load(load_after)}",
             "cold `python -c 'import X'` alone, best s: " + ", ".join(f"{m} {t:.2f}" for m, t in references.items())]
    print_table("CLI latency, cold",
                ["command", "best s", "median s", "worst s", "CPU s (median)", "goal s", "goal met (best/median)",
                 "heavy imports"],
                rows, notes)
    save("cli_latency", parameters=vars(args) | {"question": QUESTION, "chunks": chunks}, results=results,
         notes=notes)


def _verdict(result: dict[str, Any]) -> str:
    if result["goal_s"] is None:
        return "-"
    return "/".join("yes" if result[key] else "NO" for key in ("meets_goal_best", "meets_goal_median"))


def _load(load: tuple[float, float, float]) -> str:
    return " ".join(f"{x:.2f}" for x in load)


if __name__ == "__main__":
    main()
