"""Extractive answers on SQuAD dev: does the first sentence answer, and does it know when it can't?

For a seeded sample of questions, the real hybrid retrieval (k=10, as the squad eval suite) feeds
the real :class:`ExtractiveGenerator` three times: lexical selection (no embedder), semantic
selection (the loaded embedder + words + phrasing + answer type), and semantic selection over
passages retrieved *without the question's article* (``title != <its title>``: the question is then
unanswerable, split by article). The questions are split into two folds by article
(:func:`evals.runner.article_folds`). The abstention model (:mod:`llmfti.answer_calibration`) is fit
on the first fold (its answerable and unanswerable versions) and measured on the second, which it
never saw, with one unanswerable version per answerable question; so is the single-cosine threshold
it replaces. First-sentence presence is reported on the second fold too, on both definitions: over the
answered answerable questions (the issue's "share of answers whose first sentence holds a gold answer",
what ``evals.metrics.first_sentence_presence`` scores) and over all answerable ones (an abstention counts 0).

Everything is measured twice in one run: with token matching off (``before``) and on (``after``,
``--token-match-candidates`` M: the M best candidates reranked by token max-sim, as the agent does), with the
question's token vectors from the encode that gives its retrieval vector. Texts encoded per question are
counted for both (sentences with and without token vectors).

    python -m benchmarks.extractive_answers --questions 400

Prints a table and writes ``benchmarks/results/extractive_answers.json``. Measured 2026-11-30 (``--questions 400
--no-build --data-dir /work/scratch/evalsquad --index eval_squad``, M=3 token-matched on every question, before
the ``token_match_lead`` gate; report fold 200 questions, 24 articles, load ~8): first-sentence presence over
answers 0.760 -> 0.807, over all answerable 0.745 -> 0.795; answered 0.980 -> 0.985; abstention F1 0.903 ->
0.909; 2.41 sentences' token vectors encoded per answer (with a process cache).
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
    parser.add_argument("--token-match-candidates", type=int, default=3,
                        help="M for the 'after' run (agent.generator.token_match_candidates; 0 when serving)")
    parser.add_argument("--no-build", action="store_true", help="use the index as it is (do not sync it first)")
    args = parser.parse_args()
    started = datetime.now(UTC)

    import torch

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

    torch.set_num_threads(1)  # two threads on a shared 2-core machine are many times slower (STACK-NOTES)
    settings = load_settings(data_dir=args.data_dir)
    if not args.no_build:
        print(build_index(settings, [squad.SQUAD_DEV], args.index))
    index = VectorIndex.open(settings, args.index)
    embedder = index.embedder()
    article = {p.doc_id: p.title for p in squad.paragraphs()}
    answers_of = {q["id"]: [a["text"] for a in q["answers"]] for a in squad._raw()["data"]
                  for p in a["paragraphs"] for q in p["qas"]}
    questions = random.Random(args.seed).sample(squad.questions(), args.questions)
    m = args.token_match_candidates
    generators = {"before": ExtractiveGenerator(token_match_candidates=0),
                  "after": ExtractiveGenerator(token_match_candidates=m)}
    encoded = {when: {"sentences": 0, "token_sentences": 0, "answers": 0} for when in generators}
    token_cache: dict[str, object] = {}  # as the agent's bounded cache: a sentence's token vectors encoded once

    def embed_for(when):
        async def embed(texts):
            encoded[when]["sentences"] += len(texts) - 1  # the first is the question: its retrieval vector
            return embedder.encode(list(texts))
        return embed

    def embed_tokens_for(question_encoding, when):
        async def embed_tokens(texts):
            missing = [t for t in dict.fromkeys(texts[1:]) if t not in token_cache]
            encoded[when]["token_sentences"] += len(missing)
            token_cache.update(zip(missing, embedder.encode_tokens(missing), strict=True))
            return [question_encoding, *(token_cache[t] for t in texts[1:])]
        return embed_tokens

    def passages(hits):
        return [Passage(n=i + 1, chunk_id=h.chunk_id, doc_id=h.doc_id, text=h.text, score=h.score)
                for i, h in enumerate(hits)]

    rows = []
    t0 = time.perf_counter()
    for q in questions:
        question_encoding = embedder.encode_tokens([q.text])[0]
        vector = question_encoding.vector
        title = article[q.doc_id]
        inside = passages(index.search(q.text, k=K, mode="hybrid", vector=vector).hits)
        # the index's title column holds the article title with spaces (llmfti/text/loaders/squad.py)
        outside = passages(index.search(q.text, k=K, mode="hybrid", vector=vector,
                                        filters=[Filter("title", "ne", title.replace("_", " "))]).hits)
        if any(p.doc_id.split("#")[0] == title for p in outside):
            raise RuntimeError(f"the title filter kept article {title!r}: the unanswerable split is broken")
        row = {"qid": q.qid, "title": title, "gold_retrieved": any(p.doc_id == q.doc_id for p in inside)}
        for name, found, use_embedder, when in (
                ("lexical", inside, False, "before"), ("semantic", inside, True, "before"),
                ("absent", outside, True, "before"), ("semantic_after", inside, True, "after"),
                ("absent_after", outside, True, "after")):
            encoded[when]["answers"] += use_embedder
            request = GenerationRequest(
                messages=[{"role": "user", "content": q.text}], question=q.text, passages=found,
                embed=embed_for(when) if use_embedder else None,
                embed_tokens=embed_tokens_for(question_encoding, when) if use_embedder else None)
            result = asyncio.run(generators[when].generate(request))
            row[name] = {"first": present(first_sentence(result.text), answers_of[q.qid]),
                         "features": result.evidence_features}
        rows.append(row)
    seconds = time.perf_counter() - t0

    folds = article_folds([EvalRow(r["qid"], "", [], [], group=r["title"]) for r in rows])
    fit_rows = [r for r, f in zip(rows, folds, strict=True) if f == 0]
    test = [r for r, f in zip(rows, folds, strict=True) if f == 1]
    results: dict[str, object] = {
        "questions": len(rows), "fit_questions": len(fit_rows), "report_questions": len(test),
        "fit_articles": len({r["title"] for r in fit_rows}), "report_articles": len({r["title"] for r in test}),
        "gold_retrieved@10": sum(r["gold_retrieved"] for r in rows) / len(rows),
        "token_match_candidates_after": m,
        "first_sentence_presence_lexical_report": sum(r["lexical"]["first"] for r in test) / len(test),
    }
    for when, answerable, absent in (("before", "semantic", "absent"), ("after", "semantic_after", "absent_after")):
        model = fit([r[answerable]["features"] for r in fit_rows], [r[absent]["features"] for r in fit_rows],
                    EVIDENCE_FEATURES)
        by_model = abstention([model.abstains(r[absent]["features"]) for r in test],
                              [model.abstains(r[answerable]["features"]) for r in test])
        answered = [r for r in test if not model.abstains(r[answerable]["features"])]
        results |= {
            f"{when}_first_sentence_presence_of_answered_report":
                sum(r[answerable]["first"] for r in answered) / len(answered) if answered else float("nan"),
            f"{when}_first_sentence_presence_all_answerable_report":
                sum(r[answerable]["first"] for r in answered) / len(test),
            f"{when}_first_sentence_presence_never_abstaining_report": sum(r[answerable]["first"] for r in test)
            / len(test),
            **{f"{when}_abstention_{k}_model_report": v for k, v in by_model.items()},
            f"{when}_sentences_encoded_per_answer": encoded[when]["sentences"] / max(encoded[when]["answers"], 1),
            f"{when}_token_sentences_encoded_per_answer":
                encoded[when]["token_sentences"] / max(encoded[when]["answers"], 1),
        }
        if when == "before":
            cosine = threshold_keeping([r[answerable]["features"]["best_cosine"] for r in fit_rows], 0.95)
            by_cosine = abstention([r[absent]["features"]["best_cosine"] < cosine for r in test],
                                   [r[answerable]["features"]["best_cosine"] < cosine for r in test])
            results |= {**{f"before_abstention_{k}_best_cosine_report": v for k, v in by_cosine.items()},
                        "best_cosine_threshold": cosine}
    results["seconds"] = round(seconds, 1)
    print_table("extractive answers on SQuAD dev", ["measure", "value"],
                list(results.items()),
                notes=[f"abstention fit on {len(fit_rows)} questions ({results['fit_articles']} articles), measured "
                       f"on {len(test)} others ({results['report_articles']} articles), each asked with and without "
                       "its article (1:1)"])
    save("extractive_answers", parameters=vars(args) | {"data_dir": str(args.data_dir)}, results=results,
         started=started)


if __name__ == "__main__":
    main()
