"""Follow-up questions: retrieval with the earlier turn (history-aware) vs the last message only.

Runs the ``followups`` eval suite (two-turn conversations about one SQuAD dev article, the second
naming it only as "it") through the agent's own pipeline twice, same index, same rows:
``agent.history_turns`` 2 and 0. Prints hit@1/5/10 and MRR@10 side by side, writes
``benchmarks/results/followups.json``.

    python -m benchmarks.followups [--sample 200] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.reporting import print_table, save

METRICS = ["hit@1", "hit@5", "hit@10", "mrr@10", "first_sentence_presence"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sample", type=int, default=200, help="conversations (seeded); 0: all")
    parser.add_argument("--data-dir", type=Path, default=None, help="where eval_squad lives (default: a temp dir)")
    args = parser.parse_args()
    started = datetime.now(UTC)

    from evals.datasets import index_sources
    from evals.runner import run_suite, suite_settings
    from evals.suite import load_suite
    from llmfti.config import load_settings
    from pipelines.index_build import build_index

    suite = load_suite("followups")
    suite = suite.model_copy(update={"metrics": METRICS, "dataset": suite.dataset.model_copy(
        update={"sample": args.sample or None})})
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="llmfti-bench-followups-"))
    settings = load_settings(data_dir=data_dir)
    build_index(suite_settings(settings, suite), index_sources(suite, settings.data_dir), suite.index.name)
    results = {}
    for turns in (2, 0):
        turned = settings.model_copy(update={"agent": settings.agent.model_copy(update={"history_turns": turns})})
        run = run_suite(turned, suite)
        results[f"history_turns={turns}"] = {m: round(run.metrics[m], 4) for m in METRICS} | {"rows": run.rows}
    aware, last = results["history_turns=2"], results["history_turns=0"]
    rows = [(m, last[m], aware[m], round(aware[m] - last[m], 4)) for m in METRICS]
    print_table("follow-up questions (followups suite)", ["metric", "last message", "history-aware", "gain"], rows)
    save("followups", parameters={"sample": args.sample, "data_dir": str(data_dir)}, results=results, started=started)


if __name__ == "__main__":
    main()
