"""Extractive answers on SQuAD dev: does the first sentence answer, and does it know when it can't?

For a seeded sample of questions, the real hybrid retrieval (k=5, as the agent) feeds the real
:class:`ExtractiveGenerator` in three ways: lexical selection (no embedder: BM25 + rank), semantic
selection (the loaded embedder + words + answer type), and semantic with abstention. Abstention is
measured on questions asked against an index that does not contain their article (retrieval with
``title != <article>``, i.e. split by article) mixed with the same number asked normally; the
threshold is calibrated on the first half of the questions (95% of answerable questions answered,
as ``llmfti eval`` does) and measured on the second half.

    python -m benchmarks.extractive_answers --questions 1000

Prints a table and writes ``benchmarks/results/extractive_answers.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from datetime import UTC, datetime
from pathlib import Path

from benchmarks import squad
from benchmarks.reporting import RESULTS_DIR, print_table, save

INDEX = "squad"


def present(sentence: str, answers: list[str]) -> bool:
    from evals.metrics import normalize_answer

    text = normalize_answer(sentence)
    return any(normalize_answer(a) and normalize_answer(a) in text for a in answers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=1000, help="seeded sample of SQuAD dev questions")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--data-dir", type=Path, default=RESULTS_DIR / "data" / "retrieval_quality",
                        help="where the SQuAD index lives (shared with retrieval_quality; built or synced first)")
    parser.add_argument("--index", default=INDEX, help="its name (e.g. eval_squad of an `llmfti eval` data dir)")
    args = parser.parse_args()
    started = datetime.now(UTC)

    from evals.metrics import first_sentence
    from llmfti.answer_calibration import calibrate
    from llmfti.config import load_settings
    from llmfti.filters import Filter
    from llmfti.index import VectorIndex
    from llmfti.llm.backends.base import GenerationRequest, Passage
    from llmfti.llm.backends.extractive import ExtractiveGenerator, is_no_answer
    from pipelines.index_build import build_index

    settings = load_settings(data_dir=args.data_dir)
    print(build_index(settings, [squad.SQUAD_DEV], args.index))
    index = VectorIndex.open(settings, args.index)
    embedder = index.embedder()
    titles = {p.doc_id: p.title for p in squad.paragraphs()}
    answers_of = {q["id"]: [a["text"] for a in q["answers"]] for a in squad._raw()["data"]
                  for p in a["paragraphs"] for q in p["qas"]}
    questions = random.Random(args.seed).sample(squad.questions(), args.questions)
    generator = ExtractiveGenerator()

    async def embed(texts):
        return embedder.encode(list(texts))

    def passages(hits):
        return [Passage(n=i + 1, chunk_id=h.chunk_id, doc_id=h.doc_id, text=h.text, score=h.score)
                for i, h in enumerate(hits)]

    rows = []
    t0 = time.perf_counter()
    for q in questions:
        vector = embedder.encode([q.text])[0]
        inside = passages(index.search(q.text, k=5, mode="hybrid", vector=vector).hits)
        outside = passages(index.search(q.text, k=5, mode="hybrid", vector=vector,
                                        filters=[Filter("title", "ne", titles[q.doc_id])]).hits)
        row = {"qid": q.qid, "gold_retrieved": any(p.doc_id == q.doc_id for p in inside)}
        for name, found, use_embedder in (("lexical", inside, False), ("semantic", inside, True),
                                          ("absent", outside, True)):
            request = GenerationRequest(messages=[{"role": "user", "content": q.text}], question=q.text,
                                        passages=found, embed=embed if use_embedder else None)
            result = asyncio.run(generator.generate(request))
            row[name] = {"first": present(first_sentence(result.text), answers_of[q.qid]),
                         "evidence": result.evidence, "empty": is_no_answer(result.text)}
        rows.append(row)
    seconds = time.perf_counter() - t0

    half = len(rows) // 2
    calibration = calibrate([r["semantic"]["evidence"] for r in rows[:half] if r["gold_retrieved"]],
                            index=args.index, embedder="benchmark", source="extractive_answers")
    tau = calibration.abstain_below
    test = rows[half:]
    answered = [r for r in test if r["semantic"]["evidence"] >= tau]
    abstain_true = sum(r["absent"]["evidence"] < tau for r in test)
    abstain_false = len(test) - len(answered)
    precision = abstain_true / max(1, abstain_true + abstain_false)
    recall = abstain_true / len(test)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    results = {
        "questions": len(rows), "gold_retrieved@5": sum(r["gold_retrieved"] for r in rows) / len(rows),
        "first_sentence_presence_lexical": sum(r["lexical"]["first"] for r in rows) / len(rows),
        "first_sentence_presence_semantic": sum(r["semantic"]["first"] for r in rows) / len(rows),
        "abstain_below": tau, "answered_rate_test": len(answered) / len(test),
        "first_sentence_presence_of_answered_test":
            sum(r["semantic"]["first"] for r in answered) / max(1, len(answered)),
        "abstention_precision_test": precision, "abstention_recall_test": recall, "abstention_f1_test": f1,
        "seconds": round(seconds, 1),
    }
    print_table("extractive answers on SQuAD dev", ["measure", "value"], [(k, v) for k, v in results.items()],
                notes=[f"threshold calibrated on {half} questions, measured on {len(test)}; absent = retrieval "
                       "without the question's article"])
    save("extractive_answers", parameters=vars(args) | {"data_dir": str(args.data_dir)}, results=results,
         started=started)


if __name__ == "__main__":
    main()
