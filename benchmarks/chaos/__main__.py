"""Run the chaos scenarios: ``python -m benchmarks.chaos [--full] [--only NAME ...]``.

Every module of this package other than the harness is a scenario with ``run(full) -> ScenarioResult``.
A scenario that raises is a failed row (with the error), never a crash of the whole run.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import time
import traceback

import benchmarks.chaos as package
from benchmarks.chaos.harness import ScenarioResult
from benchmarks.reporting import print_table, save

NOT_SCENARIOS = {"harness", "__main__"}


def scenario_names() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(package.__path__) if m.name not in NOT_SCENARIOS)


def run_one(name: str, full: bool) -> tuple[ScenarioResult, float]:
    start = time.monotonic()
    try:
        result = importlib.import_module(f"benchmarks.chaos.{name}").run(full=full)
    except Exception as exc:  # noqa: BLE001 - a broken scenario is a failed row, the others still run
        result = ScenarioResult(name, "runs to the end", {"error": f"{type(exc).__name__}: {exc}"}, False,
                                traceback.format_exc(limit=3))
    return result, time.monotonic() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--full", action="store_true", help="the issue's figures (minutes per scenario)")
    parser.add_argument("--only", nargs="*", default=None, help="scenario names (default: all)")
    args = parser.parse_args()
    names = args.only or scenario_names()
    results = []
    for name in names:
        result, seconds = run_one(name, args.full)
        print(f"{name}: {'PASS' if result.passed else 'FAIL'} in {seconds:.0f} s: {result.measured}", flush=True)
        results.append({**result.as_dict(), "seconds": round(seconds, 1)})
    rows = [(r["name"], r["goal"], ", ".join(f"{k}={v}" for k, v in r["measured"].items()),
             "PASS" if r["passed"] else "FAIL") for r in results]
    print_table(f"chaos scenarios ({'full' if args.full else 'short'})", ["scenario", "goal", "measured", "result"],
                rows)
    save("chaos", parameters={"full": args.full, "scenarios": names}, results=results)
    return 0 if all(r["passed"] for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
