"""Evals: suites load, a tiny suite runs on the real agent pipeline, the gate catches planted
regressions, the prompt-hash rule, NaN (unmeasured) handling, and the report file."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import yaml

from evals import gate as gates
from evals.report import write_report
from evals.runner import run_suite
from evals.runs import compare, history, load_run, save_run
from evals.suite import Suite, load_suite, suite_names
from pipelines.index_build import build_index
from tests.documents import write_corpus

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", suite_names())
def test_every_suite_file_loads(name: str) -> None:
    suite = load_suite(name)
    assert suite.name == name and suite.metrics and suite.thresholds


GOLDEN = [
    {"id": "q1", "question": "Who rules a colony of honey bees?", "answers": ["a single queen"],
     "doc_ids": ["corpus/bees.md"]},
    {"id": "q2", "question": "Where is the Eiffel Tower?", "answers": ["Paris"], "doc_ids": ["kb-1"]},
    {"id": "q3", "question": "What causes tides?", "answers": ["gravity of the Moon"], "doc_ids": ["corpus/tides.pdf"]},
    {"id": "q4", "question": "How does the knight move in chess?", "answers": ["L shape"],
     "doc_ids": ["corpus/chess.html"]},
]


@pytest.fixture
def tiny(tmp_path: Path, settings, monkeypatch: pytest.MonkeyPatch):
    """A tiny suite over a tiny corpus, with its own baselines folder."""
    corpus = write_corpus(tmp_path / "corpus")
    dataset = tmp_path / "golden.jsonl"
    dataset.write_text("\n".join(json.dumps(r) for r in GOLDEN))
    monkeypatch.setattr(gates, "BASELINES_DIR", tmp_path / "baselines")
    suite = Suite.model_validate({
        "name": "tiny", "dataset": {"kind": "golden", "path": str(dataset)},
        "index": {"name": "eval_tiny", "sources": [str(corpus)]}, "retrieval_k": 5,
        "metrics": ["hit@1", "hit@5", "mrr@10", "id_context_recall", "string_presence", "squad_f1"],
        "thresholds": {"hit@5": 0.9, "string_presence": 0.7}, "tolerance": 0.05,
    })
    build_index(settings.model_copy(update={"index": settings.index.model_copy(update={"name": "eval_tiny"})}),
                [corpus], "eval_tiny")
    return suite, corpus, dataset


def test_tiny_suite_runs_scores_records_and_reports(settings, tiny) -> None:
    suite, _, _ = tiny
    run = run_suite(settings, suite)
    assert run.rows == 4 and run.metrics["hit@5"] == 1.0 and run.metrics["string_presence"] >= 0.75
    assert run.prompt_ids[0].startswith("rag_answer@") and run.index_version is not None
    assert run.generator_backend == "extractive" and len(run.dataset_hash) == 16
    verdict = gates.check(run, suite)
    assert verdict.passed and "no baseline" in verdict.notes[0]
    folder = save_run(settings, run, verdict.passed)
    report = write_report(folder, load_run(settings, run.run_id), [], verdict.__dict__)
    assert report.is_file() and "Gate: PASSED" in report.read_text() and "q4" in report.read_text()
    assert history(settings, "tiny")[0]["run_id"] == run.run_id
    again = run_suite(settings, suite)
    assert again.metrics == run.metrics  # deterministic: same inputs, same scores
    assert compare(load_run(settings, run.run_id), {**again.__dict__, "per_row": again.per_row})["changed_rows"] == []


def test_gate_fails_on_a_broken_retriever(settings, tiny, tmp_path: Path) -> None:
    suite, corpus, _ = tiny
    good = run_suite(settings, suite)
    gates.update_baseline({**good.summary(), "passed": True})
    # Plant a regression: the retriever loses the gold documents of half the questions.
    (corpus / "bees.md").unlink()
    (corpus / "chess.html").unlink()
    build_index(settings.model_copy(update={"index": settings.index.model_copy(update={"name": "eval_tiny"})}),
                [corpus], "eval_tiny")
    bad = run_suite(settings, suite)
    verdict = gates.check(bad, suite)
    assert not verdict.passed
    failed = {(f["metric"], f["rule"].split(" ")[0]) for f in verdict.failures}
    assert ("hit@5", "threshold") in failed and ("hit@1", "baseline") in failed
    # The unmeasured rows (gold chunks no longer exist -> Ragas ID recall is NaN) are counted and fail too.
    assert bad.unmeasured["id_context_recall"] == 2 and not math.isnan(bad.metrics["id_context_recall"])
    assert ("id_context_recall", "unmeasured") in failed


def test_prompt_hash_rule(settings, tiny, tmp_path: Path) -> None:
    suite, _, _ = tiny
    run = run_suite(settings, suite)
    gates.update_baseline({**run.summary(), "passed": True})
    assert gates.check(run_suite(settings, suite), suite).baseline_prompt == run.prompt_ids[0]
    # Edit the prompt: a new content hash, hence a new prompt id without a baseline.
    prompts = tmp_path / "prompts"
    shutil.copytree(REPO / "configs" / "prompts", prompts)
    source = prompts / "rag_answer.yaml"
    source.write_text(source.read_text() + "\n# edited\n")
    edited = settings.model_copy(update={"agent": settings.agent.model_copy(update={"prompts_dir": prompts})})
    changed = run_suite(edited, suite)
    assert changed.prompt_ids != run.prompt_ids
    verdict = gates.check(changed, suite)
    assert verdict.baseline_prompt is None and "no baseline" in verdict.notes[0]
    assert gates.prompts_without_baseline(changed.prompt_ids) == changed.prompt_ids
    strict = suite.model_copy(update={"thresholds": {"string_presence": 1.01}})
    assert not gates.check(changed, strict).passed  # no baseline: the thresholds alone decide


def test_every_prompt_template_has_a_baseline() -> None:
    """The CI rule: a prompt edited without re-baselining shows up here and in the gate."""
    from llmfti.prompts import load_prompt

    ids = [load_prompt(p.stem, REPO / "configs" / "prompts").id for p in (REPO / "configs" / "prompts").glob("*.yaml")]
    assert gates.prompts_without_baseline(ids) == [], "run the suites and: llmfti eval baseline --update --suite S"


def test_suite_yaml_rejects_unknown_metrics(tmp_path: Path) -> None:
    from llmfti.errors import ConfigError

    data = yaml.safe_load((REPO / "evals" / "suites" / "docs.yaml").read_text())
    data["metrics"].append("vibes")
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="vibes"):
        load_suite(str(path))


def test_judge_failures_are_unmeasured_and_judgements_are_cached(tmp_path: Path) -> None:
    """An unreachable judge gives NaN (counted as unmeasured); a cached judgement is reused offline."""
    from evals.datasets import EvalRow
    from evals.metrics import RagasScorers, RowResult, _digest, aggregate, score_rows
    from llmfti.config import load_settings
    from llmfti.embedders import load_embedder

    judge = {"base_url": "http://127.0.0.1:9/v1", "model": "judge", "api_key": "x"}  # nothing listens on port 9
    row = RowResult(EvalRow("r1", "Who rules the hive?", ["the queen"], ["d"]), "The queen rules. [1]", [], [], [],
                    contexts=["The queen rules the hive."])
    cache = tmp_path / "judge_cache.jsonl"
    scorers = RagasScorers(load_embedder(load_settings().embedder), judge, cache)
    score_rows([row], ["faithfulness"], scorers)
    means, unmeasured = aggregate([row], ["faithfulness"])
    assert math.isnan(row.scores["faithfulness"]) and unmeasured["faithfulness"] == 1
    assert math.isnan(means["faithfulness"])
    assert not cache.exists()  # failures are not cached: the next run asks again

    key = _digest(["faithfulness", judge["base_url"], judge["model"], row.row.question, row.clean_answer, row.contexts])
    cache.write_text(json.dumps({"key": key, "value": 0.75}) + "\n")
    cached = RowResult(row.row, row.answer, [], [], [], contexts=row.contexts)
    score_rows([cached], ["faithfulness"], RagasScorers(load_embedder(load_settings().embedder), judge, cache))
    assert cached.scores["faithfulness"] == 0.75  # served from the cache: the unreachable judge was not needed


def test_a_run_that_misses_only_the_old_baseline_can_become_the_baseline_with_a_reason(settings, tmp_path: Path,
                                                                                     monkeypatch) -> None:
    from llmfti.cli.eval import _only_baseline_failures

    monkeypatch.setattr(gates, "BASELINES_DIR", tmp_path / "baselines")
    suite = load_suite("docs")
    meets = {m: limit + 0.01 for m, limit in suite.thresholds.items()}
    run = {"suite": "docs", "run_id": "docs-x", "dataset_hash": "h", "rows": 16, "prompt_ids": ["rag_answer@x"],
           "metrics": meets, "unmeasured": {m: 0 for m in meets}, "passed": False}
    assert _only_baseline_failures(settings, run)
    assert not _only_baseline_failures(settings, {**run, "metrics": {**meets, "hit@1": 0.0}})
    assert not _only_baseline_failures(settings, {**run, "unmeasured": {"hit@1": suite.max_unmeasured + 1}})
    gates.update_baseline(run, accepted="shorter answers, by intent")
    recorded = gates.load_baselines("docs")["prompts"]["rag_answer@x"]
    assert recorded["accepted"] == "shorter answers, by intent" and recorded["metrics"] == meets
