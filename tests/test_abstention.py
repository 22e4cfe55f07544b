"""Abstention: the calibrated model (fit, stored per index and embedder, read by the agent), the
held-out-article split of eval suites, the abstention metrics and the out-of-fold eval run."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest

from evals.datasets import EvalRow, held_out_articles, index_sources, load_rows
from evals.metrics import RowResult, aggregate, score_rows
from evals.runner import article_folds
from evals.suite import Suite
from llmfti.answer_calibration import (
    AbstentionModel,
    Calibration,
    abstention_rule,
    calibrate,
    fit,
    latest,
    record,
)
from llmfti.errors import ConfigError, InvalidInputError
from llmfti.llm.backends.extractive import ABSTAIN

FEATURES = ("best_cosine", "top3_names", "noise")


def synthetic(n: int, answerable: bool, seed: int) -> list[dict[str, float]]:
    """Answerable questions: close sentences and their names found; unanswerable: neither; noise: either."""
    rng = random.Random(seed)
    centre = (0.65, 0.9) if answerable else (0.4, 0.4)
    return [{"best_cosine": rng.gauss(centre[0], 0.08), "top3_names": min(1.0, max(0.0, rng.gauss(centre[1], 0.2))),
             "noise": rng.random()} for _ in range(n)]


def test_the_model_separates_what_it_was_fit_on_and_keeps_the_chosen_share_answered() -> None:
    model = fit(synthetic(200, True, 1), synthetic(200, False, 2), FEATURES)
    held_in, held_out = synthetic(400, True, 3), synthetic(400, False, 4)  # not fit on
    answered = sum(not model.abstains(v) for v in held_in) / len(held_in)
    recall = sum(model.abstains(v) for v in held_out) / len(held_out)
    assert 0.9 <= answered <= 0.99 and recall > 0.9
    weights = dict(zip(model.features, model.weights, strict=True))
    assert weights["best_cosine"] > 0 and weights["top3_names"] > 0
    assert abs(weights["noise"]) < weights["best_cosine"] / 5  # a feature that tells nothing weighs little
    assert AbstentionModel.from_json(model.to_json()) == model


def test_bad_calibration_input_is_refused_with_what_to_do() -> None:
    with pytest.raises(InvalidInputError, match="too few") as caught:
        fit(synthetic(10, True, 1), synthetic(200, False, 2), FEATURES)
    assert "at least 20" in str(caught.value)
    with pytest.raises(InvalidInputError, match="answer_rate"):
        fit(synthetic(50, True, 1), synthetic(50, False, 2), FEATURES, answer_rate=1.0)
    model = fit(synthetic(50, True, 1), synthetic(50, False, 2), FEATURES)
    with pytest.raises(InvalidInputError, match="noise"):
        model.answerability({"best_cosine": 0.5, "top3_names": 1.0})


def test_the_agent_uses_the_latest_model_of_its_index_and_embedder(settings) -> None:
    answerable, unanswerable = synthetic(60, True, 1), synthetic(60, False, 2)
    features = ("best_cosine", "top3_names")

    def calibration(index: str, embedder: str, source: str, shift: float = 0.0) -> Calibration:
        shifted = [{**v, "best_cosine": v["best_cosine"] + shift} for v in answerable]
        return calibrate(shifted, unanswerable, features, index=index, embedder=embedder, source=source)

    model, threshold, source = abstention_rule(settings, "docs", "e@1")
    assert model is None and threshold == settings.agent.generator.abstain_below and "no calibration" in source
    record(settings, calibration("docs", "e@1", "run-a"))
    record(settings, calibration("docs", "e@1", "run-b", shift=0.1))
    record(settings, calibration("docs", "other@2", "run-c"))
    record(settings, calibration("squad", "e@1", "run-d"))
    found = latest(settings, "docs", "e@1")
    assert found.source == "run-b" and found.questions == 60 and found.unanswerable == 60
    model, threshold, source = abstention_rule(settings, "docs", "e@1")
    assert model == found.model and threshold is None and "run-b" in source
    assert abstention_rule(settings, "handbook", "e@1")[0] is None  # another index: not calibrated
    assert Calibration.from_dict(found.as_dict()) == found  # the form an eval run stores
    off = settings.model_copy(update={"agent": settings.agent.model_copy(update={
        "generator": settings.agent.generator.model_copy(update={"abstain": False})})})
    assert abstention_rule(off, "docs", "e@1")[:2] == (None, None)


def test_a_model_over_features_this_version_does_not_measure_is_not_used(settings) -> None:
    record(settings, calibrate(synthetic(30, True, 1), synthetic(30, False, 2), FEATURES, index="docs",
                               embedder="e@1", source="run-old"))  # "noise" is no evidence feature
    model, threshold, source = abstention_rule(settings, "docs", "e@1")
    assert model is None and threshold == settings.agent.generator.abstain_below
    assert "run-old uses features this version does not measure" in source


def result(row: EvalRow, abstained: bool, answer: str = "Paris is the capital. [1]") -> RowResult:
    return RowResult(row, ABSTAIN if abstained else answer, ["c1"], ["d1"], ["c1"])


def test_abstention_metrics_count_i_dont_know_as_the_positive() -> None:
    answerable = [EvalRow(f"a{i}", "q", ["Paris"], ["d1"]) for i in range(8)]
    unanswerable = [EvalRow(f"u{i}", "q", ["Paris"], ["d9"], answerable=False) for i in range(4)]
    results = ([result(r, i == 0) for i, r in enumerate(answerable)]  # one answerable row wrongly abstains
               + [result(r, i < 3) for i, r in enumerate(unanswerable)])  # 3 of 4 unanswerable abstain
    names = ["hit@1", "answered", "first_sentence_presence", "abstention_precision", "abstention_recall",
             "abstention_f1"]
    score_rows(results, names, None)
    means, unmeasured = aggregate(results, names)
    assert means["abstention_precision"] == pytest.approx(3 / 4) and means["abstention_recall"] == pytest.approx(3 / 4)
    assert means["abstention_f1"] == pytest.approx(0.75)
    assert means["answered"] == pytest.approx(7 / 8)
    assert means["first_sentence_presence"] == 1.0  # over the 7 answers: the abstention is no answer
    assert means["hit@1"] == 1.0  # unanswerable rows are not scored on retrieval or answers
    assert all(set(r.scores) == {"abstained"} for r in results[8:]) and not any(unmeasured.values())
    _, unmeasured = aggregate(results[:8], names)  # no unanswerable rows: recall and F1 are unmeasured
    assert unmeasured["abstention_recall"] == 1 and unmeasured["abstention_f1"] == 1
    assert math.isnan(aggregate(results[:8], ["abstention_f1"])[0]["abstention_f1"])


def squad_file(path: Path, articles: int, questions: int) -> Path:
    """A SQuAD-format file: ``articles`` articles about made-up towns, each with ``questions`` questions."""
    data = []
    for a in range(articles):
        town = f"Town{a:02d}"
        paragraphs = [{"context": f"{town} was founded in {1700 + a} by miller number {a}. "
                                  f"The river of {town} is called Stream{a}.",
                       "qas": [{"id": f"{town}-{q}", "question": f"When was {town} founded (variant {q})?",
                                "answers": [{"text": str(1700 + a), "answer_start": 0}]} for q in range(questions)]}]
        data.append({"title": f"{town}_(place)", "paragraphs": paragraphs})
    path.write_text(json.dumps({"version": "1.1", "data": data}), encoding="utf-8")
    return path


def split_suite(source: Path, **dataset) -> Suite:
    return Suite.model_validate({
        "name": "split", "dataset": {"kind": "squad", "path": str(source), **dataset},
        "index": {"name": "eval_split", "sources": [str(source)], "hold_out_articles": 3, "hold_out_seed": 1},
        "metrics": ["hit@1"],
    })


def test_a_suite_holds_articles_out_of_its_index_and_asks_about_them_as_unanswerable(tmp_path: Path) -> None:
    source = squad_file(tmp_path / "dev.json", articles=10, questions=4)
    suite = split_suite(source, unanswerable=5, sample=20, seed=3)
    held_out = held_out_articles(suite)
    assert len(held_out) == 3 and held_out == held_out_articles(suite)  # seeded: the same every run
    (built,) = index_sources(suite, tmp_path / "data")
    kept = {a["title"] for a in json.loads(built.read_text())["data"]}
    assert len(kept) == 7 and not kept & held_out
    assert index_sources(suite, tmp_path / "data") == [built]  # written once
    rows = load_rows(suite)
    answerable = [r for r in rows if r.answerable]
    unanswerable = [r for r in rows if not r.answerable]
    assert len(answerable) == 20 and len(unanswerable) == 5
    assert all(r.group not in held_out for r in answerable) and all(r.group in held_out for r in unanswerable)
    assert len(load_rows(suite, full=True)) == 40  # every question: 28 answerable, 12 unanswerable
    folds = article_folds(rows)
    for kind in (True, False):
        in_fold = [{r.group for r, f in zip(rows, folds, strict=True) if r.answerable == kind and f == fold}
                   for fold in (0, 1)]
        assert in_fold[0] and in_fold[1] and not in_fold[0] & in_fold[1]  # both folds, no article in both


def test_a_split_suite_that_cannot_work_is_refused(tmp_path: Path) -> None:
    source = squad_file(tmp_path / "dev.json", articles=3, questions=2)
    with pytest.raises(ConfigError, match="fewer than 3"):
        held_out_articles(split_suite(source))
    base = {"name": "x", "dataset": {"kind": "squad", "path": str(source), "unanswerable": 5},
            "index": {"name": "i", "sources": [str(source)]}, "metrics": ["hit@1"]}
    with pytest.raises(ValueError, match="hold_out_articles"):
        Suite.model_validate(base)
    with pytest.raises(ValueError, match="calibrate_abstention needs unanswerable rows"):
        Suite.model_validate({**base, "dataset": {"kind": "squad", "path": str(source)}, "calibrate_abstention": True})


def test_an_eval_run_judges_abstention_out_of_fold_and_records_the_model_for_its_index(settings, tmp_path) -> None:
    """The real pipeline over a split suite: abstention precision/recall from models fit on the other fold,
    and the model fit on every row recorded for the index, which the agent then serves with."""
    from evals.runner import run_suite, suite_settings
    from evals.runs import save_run
    from llmfti.embedders.base import embedder_fingerprint
    from llmfti.index import VectorIndex
    from pipelines.index_build import build_index

    source = squad_file(tmp_path / "dev.json", articles=16, questions=6)
    suite = Suite.model_validate({
        "name": "split", "dataset": {"kind": "squad", "path": str(source), "unanswerable": None},
        "index": {"name": "eval_split", "sources": [str(source)], "hold_out_articles": 8, "hold_out_seed": 1},
        "retrieval_k": 3, "calibrate_abstention": True,
        "metrics": ["hit@1", "answered", "abstention_precision", "abstention_recall", "abstention_f1"],
    })
    build_index(suite_settings(settings, suite), index_sources(suite, settings.data_dir), "eval_split")
    run = run_suite(settings, suite, full=True)
    assert run.rows == 96 and sum(not r["answerable"] for r in run.per_row) == 48
    assert run.metrics["hit@1"] >= 0.9
    assert run.metrics["abstention_recall"] >= 0.8 and run.metrics["abstention_precision"] >= 0.8
    assert run.metrics["answered"] >= 0.8
    assert all(set(r["evidence_features"]) for r in run.per_row)
    assert run.calibration["questions"] == 48 and run.calibration["unanswerable"] == 48
    save_run(settings, run, passed=True)
    index = VectorIndex.open(suite_settings(settings, suite))
    model, _, source_of = abstention_rule(settings, "eval_split", embedder_fingerprint(index.info))
    assert model is not None and run.run_id in source_of
