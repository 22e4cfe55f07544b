"""The GPU fine-tuning benchmark runs end to end with --tiny on CPU (its figures are not asserted)."""

from __future__ import annotations

import json
from pathlib import Path


def test_finetune_benchmark_tiny_runs_both_sides(tmp_path: Path) -> None:
    from benchmarks.finetune_gpu import main

    out = tmp_path / "bench.json"
    report = main(["--tiny", "--steps", "2", "--warmup-steps", "1", "--examples", "64", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["runs"] == report["runs"]
    assert [r["run"].split()[0] for r in report["runs"]] == ["llmfti", "Trainer"]
    for run in report["runs"]:
        assert run["real_tokens"] > 0 and run["tokens_per_s"] > 0 and run["model_tflops_per_s"] > 0
        assert run["mfu"] is None  # no peak FLOP/s is known for a CPU
    assert report["speedup_vs_baseline"] > 0 and report["baseline_batch"] >= 1
