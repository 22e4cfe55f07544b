"""The learned sentence ranker: its features, the listwise fit, storage per index and embedder, how the
extractive generator uses it, and the eval run that fits it out of fold (tests/test_abstention.py has the
SQuAD-format suite helpers)."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from pathlib import Path

import pytest

from llmfti.errors import InvalidInputError
from llmfti.llm.backends.answer_selection import candidates, select
from llmfti.llm.backends.base import Passage
from llmfti.llm.backends.sentence_features import FEATURES, candidate_features, head_noun, question_type
from llmfti.sentence_ranker import (
    HAND_RANKING,
    MIN_QUESTIONS,
    RankerRecord,
    SentenceRanker,
    fit,
    latest,
    ranking_rule,
    record,
)


def feature(rows: list[list[float]], name: str) -> list[float]:
    return [row[FEATURES.index(name)] for row in rows]


def test_question_types_and_the_noun_a_what_question_asks_about() -> None:
    assert question_type("How many people live in Warsaw?") == "number"
    assert question_type("In what year did the war end?") == "date"
    assert question_type("When did Levi's Stadium open?") == "date"
    assert question_type("Who founded the city?") == "person"
    assert question_type("Where did Tesla die?") == "place"
    assert question_type("What museum in Newcastle is dedicated to children's books?") == "noun"
    assert head_noun("What museum in Newcastle is dedicated to children's books?") == "museum"
    assert head_noun("What is the capital of France?") is None
    assert question_type("Why did the empire fall?") == "other"


def test_features_describe_new_information_answer_type_and_place() -> None:
    question = "How many museums does Newcastle have?"
    text = ("Newcastle is a city in the north of England. Newcastle has 12 museums and galleries. "
            "Museums in Newcastle are popular with visitors.")
    passages = [Passage(1, "c1", "d1", text, 0.9), Passage(2, "c2", "d2", "The river Tyne runs through the city.", 0.3)]
    cands = candidates(passages)
    rows = candidate_features(question, passages, cands, [0.2, 0.6, 0.5, 0.1])
    assert [len(r) for r in rows] == [len(FEATURES)] * 4
    assert feature(rows, "type_number") == [0.0, 1.0, 0.0, 0.0]  # the only sentence with a number not asked
    assert feature(rows, "new_near_question")[1] == 1.0  # "12" stands next to "museums"
    assert feature(rows, "first_in_passage") == [1.0, 0.0, 0.0, 1.0]
    assert feature(rows, "rank_prior") == [1.0, 1.0, 1.0, 0.5]
    assert feature(rows, "cosine_gap")[1] == 0.0 and feature(rows, "cosine_gap")[0] == pytest.approx(-0.4)
    assert feature(rows, "cosine_rank") == [pytest.approx(1 / 3), 1.0, 0.5, 0.25]
    assert feature(rows, "neighbour_cosine")[0] == pytest.approx(0.6)  # its neighbour, the 12-museums sentence


def synthetic_questions(n: int, seed: int) -> list[tuple[list[list[float]], list[bool]]]:
    """Candidates whose answering sentence holds the asked-for type (type_number) while a decoy repeats the
    question's words (coverage); every other feature is noise."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        rows, labels = [], []
        answer = rng.randrange(6)
        for i in range(6):
            row = [rng.random() for _ in FEATURES]
            row[FEATURES.index("type_number")] = 1.0 if i == answer else float(rng.random() < 0.15)
            row[FEATURES.index("coverage")] = rng.uniform(0.6, 1.0) if i != answer else rng.uniform(0.0, 0.6)
            rows.append(row)
            labels.append(i == answer)
        out.append((rows, labels))
    return out


def top_is_right(model: SentenceRanker, questions) -> float:
    hits = 0
    for rows, labels in questions:
        scores = model.scores(rows)
        hits += labels[scores.index(max(scores))]
    return hits / len(questions)


def test_the_fit_learns_what_answers_and_ranks_questions_it_never_saw() -> None:
    model = fit(synthetic_questions(200, seed=1), FEATURES)
    assert model.questions == 200 and model.learned
    weights = dict(zip(model.features, model.weights, strict=True))
    assert weights["type_number"] > 1.0 and weights["coverage"] < -1.0
    noise = [abs(w) for f, w in weights.items() if f not in ("type_number", "coverage")]
    assert max(noise) < min(abs(weights["type_number"]), abs(weights["coverage"])) / 3
    assert top_is_right(model, synthetic_questions(200, seed=2)) >= 0.9  # chance: about 0.15
    again = SentenceRanker.from_json(model.to_json())
    assert again == model


def test_bad_ranker_input_is_refused_with_what_to_do() -> None:
    with pytest.raises(InvalidInputError, match="too few") as err:
        fit(synthetic_questions(MIN_QUESTIONS - 1, seed=3), FEATURES)
    assert "squad" in str(err.value.fix)
    # questions where no candidate (or every candidate) answers teach nothing and do not count
    useless = [(rows, [False] * len(rows)) for rows, _ in synthetic_questions(MIN_QUESTIONS, seed=4)]
    with pytest.raises(InvalidInputError, match="too few"):
        fit(useless, FEATURES)
    model = fit(synthetic_questions(MIN_QUESTIONS, seed=5), FEATURES)
    with pytest.raises(InvalidInputError, match="features"):
        model.scores([[0.0, 1.0]])


def test_the_agent_reads_the_latest_ranker_of_its_index_and_embedder(settings) -> None:
    assert ranking_rule(settings, "squad", "e@1")[0] is None  # no table yet: hand weights
    first = fit(synthetic_questions(60, seed=6), FEATURES)
    second = fit(synthetic_questions(80, seed=7), FEATURES)
    other = fit(synthetic_questions(70, seed=8), FEATURES)
    record(settings, RankerRecord("squad", "e@1", first, "run-a", datetime(2026, 1, 1, tzinfo=UTC)))
    record(settings, RankerRecord("squad", "e@1", second, "run-b", datetime(2026, 1, 2, tzinfo=UTC)))
    record(settings, RankerRecord("squad", "e@2", other, "run-c", datetime(2026, 1, 3, tzinfo=UTC)))
    record(settings, RankerRecord("docs", "e@1", other, "run-d", datetime(2026, 1, 4, tzinfo=UTC)))
    found = latest(settings, "squad", "e@1")
    assert found is not None and found.source == "run-b" and found.model == second
    model, source = ranking_rule(settings, "squad", "e@1")
    assert model == second and "run-b" in source
    assert ranking_rule(settings, "squad", "e@3")[0] is None
    assert ranking_rule(settings, "squad", None)[0] is None
    stale = SentenceRanker(("cosine",), (0.0,), (1.0,), (1.0,), 60)  # features this version no longer measures
    record(settings, RankerRecord("squad", "e@1", stale, "run-e", datetime(2026, 1, 5, tzinfo=UTC)))
    model, source = ranking_rule(settings, "squad", "e@1")
    assert model is None and "other features" in source
    assert RankerRecord.from_dict(json.loads(json.dumps(found.as_dict(), default=str)) | {
        "created_at": found.created_at}).model == second


def test_a_ranker_older_than_the_abstention_model_of_its_index_is_not_used(settings) -> None:
    """Abstention is fit on the evidence of the sentences picked when it was fit: a later run without a ranker
    (hand-picked sentences) makes the older ranker a mismatch, a ranker from the same run matches."""
    from llmfti.answer_calibration import Calibration
    from llmfti.answer_calibration import fit as fit_abstention
    from llmfti.answer_calibration import record as record_calibration
    from tests.test_abstention import FEATURES as EVIDENCE
    from tests.test_abstention import synthetic

    def calibration(source: str, day: int) -> Calibration:
        model = fit_abstention(synthetic(40, True, day), synthetic(40, False, day + 1), EVIDENCE)
        return Calibration("squad", "e@1", model, 0.96, 40, 40, source, datetime(2026, 2, day, tzinfo=UTC))

    ranker = fit(synthetic_questions(60, seed=9), FEATURES)
    record(settings, RankerRecord("squad", "e@1", ranker, "run-a", datetime(2026, 2, 1, tzinfo=UTC)))
    record_calibration(settings, calibration("run-a", 1))
    assert ranking_rule(settings, "squad", "e@1")[0] == ranker  # same run
    record_calibration(settings, calibration("run-b", 2))
    model, source = ranking_rule(settings, "squad", "e@1")
    assert model is None and "run-b is newer" in source
    record(settings, RankerRecord("squad", "e@1", ranker, "run-c", datetime(2026, 2, 3, tzinfo=UTC)))
    assert ranking_rule(settings, "squad", "e@1")[0] == ranker


def test_select_picks_by_the_ranker_and_reports_every_candidates_features() -> None:
    question = "How many museums does Newcastle have?"
    text = ("Museums in Newcastle: how many museums does Newcastle have is asked often. "
            "The city counts 12 galleries and halls of exhibits.")
    passages = [Passage(1, "c1", "d1", text, 1.0)]
    sims = [0.8, 0.5]
    hand = select(question, passages, 2, similarities=sims)
    assert hand.chosen[0].sentence.startswith("Museums") and hand.candidate_rows is None
    reported = select(question, passages, 2, similarities=sims, ranker=HAND_RANKING)
    assert reported.chosen == hand.chosen and reported.scores == hand.scores  # same choice, features reported
    assert [s for s, _ in reported.candidate_rows] == [c.sentence for c in candidates(passages)]
    assert all(len(f) == len(FEATURES) for _, f in reported.candidate_rows)
    weights = tuple(1.0 if f == "type_number" else 0.0 for f in FEATURES)
    by_type = SentenceRanker(FEATURES, (0.0,) * len(FEATURES), (1.0,) * len(FEATURES), weights, 50)
    learned = select(question, passages, 2, similarities=sims, ranker=by_type)
    assert learned.chosen[0].sentence.startswith("The city counts 12")
    assert learned.features is not None and learned.evidence == 0.8
    lexical = select(question, passages, 2, ranker=by_type)  # no embedder: no cosine, the ranker is not used
    assert lexical.chosen == hand.chosen[:len(lexical.chosen)] and lexical.candidate_rows is None


def ranker_squad_file(path: Path, articles: int, questions: int) -> Path:
    """Articles whose first sentence repeats the question's words without answering, and whose answer (a
    year) sits in a sentence sharing few words with the question: the hand weights pick the decoy."""
    data = []
    for a in range(articles):
        town = f"Town{a:02d}"
        context = (f"Many visitors ask when {town} was founded and who founded {town} long ago. "
                   f"Its first mill began grinding grain in {1700 + a} under miller {a}. "
                   f"The river of {town} is called Stream{a} and it floods often.")
        qas = [{"id": f"{town}-{q}", "question": f"When was {town} founded (variant {q})?",
                "answers": [{"text": str(1700 + a), "answer_start": 0}]} for q in range(questions)]
        data.append({"title": f"{town}_(place)", "paragraphs": [{"context": context, "qas": qas}]})
    path.write_text(json.dumps({"version": "1.1", "data": data}), encoding="utf-8")
    return path


def test_an_eval_run_fits_the_ranker_out_of_fold_and_records_it_for_the_agent(settings, tmp_path) -> None:
    """The real pipeline over a split suite: sentences picked by a ranker fit on the other fold beat the hand
    weights on first-sentence presence, and the ranker fit on every row is recorded and served."""
    import torch

    from evals.datasets import index_sources
    from evals.runner import run_suite, suite_settings
    from evals.runs import save_run
    from evals.suite import Suite
    from llmfti.embedders.base import embedder_fingerprint
    from llmfti.index import VectorIndex
    from pipelines.index_build import build_index

    torch.set_num_threads(1)
    source = ranker_squad_file(tmp_path / "dev.json", articles=48, questions=3)
    spec = {"name": "split", "dataset": {"kind": "squad", "path": str(source), "unanswerable": None},
            "index": {"name": "eval_split", "sources": [str(source)], "hold_out_articles": 16, "hold_out_seed": 1},
            "retrieval_k": 3, "calibrate_abstention": True,
            "metrics": ["first_sentence_presence", "answered", "abstention_f1"]}
    hand_suite = Suite.model_validate(spec)
    build_index(suite_settings(settings, hand_suite), index_sources(hand_suite, settings.data_dir), "eval_split")
    hand = run_suite(settings, hand_suite, full=True)
    assert hand.sentence_ranker is None
    ranked = run_suite(settings, Suite.model_validate({**spec, "fit_sentence_ranker": True}), full=True)
    assert ranked.rows == hand.rows == 144
    assert hand.metrics["first_sentence_presence"] <= 0.5  # the decoy sentence wins on words
    assert ranked.metrics["first_sentence_presence"] >= hand.metrics["first_sentence_presence"] + 0.3
    assert ranked.metrics["abstention_f1"] >= 0.8  # abstention is fit on the ranked answers' evidence
    assert ranked.sentence_ranker["model"]["questions"] == 96
    save_run(settings, ranked, passed=True)
    index = VectorIndex.open(suite_settings(settings, hand_suite))
    model, source_of = ranking_rule(settings, "eval_split", embedder_fingerprint(index.info))
    assert isinstance(model, SentenceRanker) and model.questions == 96 and ranked.run_id in source_of


def test_a_learned_ranker_joins_further_sentences_within_its_own_margin() -> None:
    from llmfti.llm.backends.base import GenerationRequest
    from llmfti.llm.backends.extractive import ExtractiveGenerator

    question = "How many museums does Newcastle have?"
    text = ("The city counts 12 museums in all. It also counts 30 galleries of art. "
            "The river Tyne runs past the quay.")
    passages = [Passage(1, "c1", "d1", text, 1.0)]
    weights = tuple(1.0 if f == "type_number" else 0.0 for f in FEATURES)

    def answer(join_within: float) -> str:
        ranker = SentenceRanker(FEATURES, (0.0,) * len(FEATURES), (1.0,) * len(FEATURES), weights, 50,
                                join_within=join_within)
        request = GenerationRequest(messages=[{"role": "user", "content": question}], question=question,
                                    passages=passages, ranker=ranker)
        return ExtractiveGenerator().answer(request, similarities=[0.5, 0.5, 0.5]).text

    # both number sentences score 1, the river 0: a margin under 1 joins the second number sentence only
    assert answer(0.5) == "The city counts 12 museums in all. [1] It also counts 30 galleries of art. [1]"
    assert answer(1.0).count("[1]") == 3
    assert answer(0.0) == answer(0.5)  # equal scores always join
