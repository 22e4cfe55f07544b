"""Extractive answers on SQuAD dev: does the first sentence answer, and does it know when it can't?

For a seeded sample of questions, the real hybrid retrieval (k=10, as the squad eval suite) feeds
the real :class:`ExtractiveGenerator` three times: lexical selection (no embedder), semantic
selection (the loaded embedder + words + phrasing + answer type), and semantic selection over
passages retrieved *without the question's article* (``title != <its title>``: the question is then
unanswerable, split by article). The questions are split into two folds by article
(:func:`evals.runner.article_folds`). The abstention model (:mod:`llmfti.answer_calibration`) is fit
on the first fold (its answerable and unanswerable versions) and measured on the second, which it
never saw, with one unanswerable version per answerable question; so is the single-cosine threshold
it replaces. First-sentence presence is reported on the second fold too.

    python -m benchmarks.extractive_answers --questions 400

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
K = 10


def present(sentence: str, answers: list[str]) -> bool:
    from evals.metrics import normalize_answer

    text = normalize_answer(sentence)
    return any(normalize_answer(a) and normalize_answer(a) in text for a in answers)


def abstention(abstained_unanswerable: list[bool], abstained_answerable: list[bool]) -> dict[str, float]:
    """Precision, recall, F1 of "I don't know" (the positive) and the answered share of answerable questions."""
    right, wrong = sum(abstained_unanswerable), sum(abstained_answerable)
    precision = right / (right + wrong) if right + wrong else 0.0
    recall = right / len(abstained_unanswerable)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1,
            "answered": 1 - wrong / len(abstained_answerable)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=400, help="seeded sample of SQuAD dev questions")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--data-dir", type=Path, default=RESULTS_DIR / "data" / "retrieval_quality",
                        help="where the SQuAD index lives (shared with retrieval_quality; built or synced first)")
    parser.add_argument("--index", default=INDEX, help="its name (an index of all of SQuAD dev)")
    args = parser.parse_args()
    started = datetime.now(UTC)

    from evals.datasets import EvalRow
    from evals.metrics import first_sentence
    from evals.runner import article_folds
    from llmfti.answer_calibration import fit, threshold_keeping
    from llmfti.config import load_settings
    from llmfti.filters import Filter
    from llmfti.index import VectorIndex
    from llmfti.llm.backends.answer_selection import EVIDENCE_FEATURES
    from llmfti.llm.backends.base import GenerationRequest, Passage
    from llmfti.llm.backends.extractive import ExtractiveGenerator
    from pipelines.index_build import build_index

    settings = load_settings(data_dir=args.data_dir)
    print(build_index(settings, [squad.SQUAD_DEV], args.index))
    index = VectorIndex.open(settings, args.index)
    embedder = index.embedder()
    article = {p.doc_id: p.title for p in squad.paragraphs()}
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
        title = article[q.doc_id]
        inside = passages(index.search(q.text, k=K, mode="hybrid", vector=vector).hits)
        # the index's title column holds the article title with spaces (llmfti/text/loaders/squad.py)
        outside = passages(index.search(q.text, k=K, mode="hybrid", vector=vector,
                                        filters=[Filter("title", "ne", title.replace("_", " "))]).hits)
        if any(p.doc_id.split("#")[0] == title for p in outside):
            raise RuntimeError(f"the title filter kept article {title!r}: the unanswerable split is broken")
        row = {"qid": q.qid, "title": title, "gold_retrieved": any(p.doc_id == q.doc_id for p in inside)}
        for name, found, use_embedder in (("lexical", inside, False), ("semantic", inside, True),
                                          ("absent", outside, True)):
            request = GenerationRequest(messages=[{"role": "user", "content": q.text}], question=q.text,
                                        passages=found, embed=embed if use_embedder else None)
            result = asyncio.run(generator.generate(request))
            row[name] = {"first": present(first_sentence(result.text), answers_of[q.qid]),
                         "features": result.evidence_features}
        rows.append(row)
    seconds = time.perf_counter() - t0

    folds = article_folds([EvalRow(r["qid"], "", [], [], group=r["title"]) for r in rows])
    fit_rows = [r for r, f in zip(rows, folds, strict=True) if f == 0]
    test = [r for r, f in zip(rows, folds, strict=True) if f == 1]
    model = fit([r["semantic"]["features"] for r in fit_rows], [r["absent"]["features"] for r in fit_rows],
                EVIDENCE_FEATURES)
    by_model = abstention([model.abstains(r["absent"]["features"]) for r in test],
                          [model.abstains(r["semantic"]["features"]) for r in test])
    cosine = threshold_keeping([r["semantic"]["features"]["best_cosine"] for r in fit_rows], 0.95)
    by_cosine = abstention([r["absent"]["features"]["best_cosine"] < cosine for r in test],
                           [r["semantic"]["features"]["best_cosine"] < cosine for r in test])
    answered = [r for r in test if not model.abstains(r["semantic"]["features"])]
    results = {
        "questions": len(rows), "fit_questions": len(fit_rows), "report_questions": len(test),
        "fit_articles": len({r["title"] for r in fit_rows}), "report_articles": len({r["title"] for r in test}),
        "gold_retrieved@10": sum(r["gold_retrieved"] for r in rows) / len(rows),
        "first_sentence_presence_lexical_report": sum(r["lexical"]["first"] for r in test) / len(test),
        "first_sentence_presence_semantic_report": sum(r["semantic"]["first"] for r in test) / len(test),
        "first_sentence_presence_of_answered_report": sum(r["semantic"]["first"] for r in answered) / len(answered),
        **{f"abstention_{k}_model_report": v for k, v in by_model.items()},
        **{f"abstention_{k}_best_cosine_report": v for k, v in by_cosine.items()},
        "best_cosine_threshold": cosine,
        "model": dict(zip(model.features, model.weights, strict=True)) | {"bias": model.bias,
                                                                          "threshold": model.threshold},
        "seconds": round(seconds, 1),
    }
    print_table("extractive answers on SQuAD dev", ["measure", "value"],
                [(k, v) for k, v in results.items() if k != "model"],
                notes=[f"abstention fit on {len(fit_rows)} questions ({results['fit_articles']} articles), measured "
                       f"on {len(test)} others ({results['report_articles']} articles), each asked with and without "
                       "its article (1:1)"])
    save("extractive_answers", parameters=vars(args) | {"data_dir": str(args.data_dir)}, results=results,
         started=started)


if __name__ == "__main__":
    main()
