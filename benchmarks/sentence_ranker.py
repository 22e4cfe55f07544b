"""Which sentence answers: the ceiling of sentence selection on SQuAD dev, and the learned ranker vs the hand weights.

For a seeded sample of SQuAD dev questions, the real hybrid retrieval (k=10, as the squad eval suite)
returns passages; their candidate sentences (:func:`answer_selection.candidates`) are described by
:func:`sentence_features.candidate_features`, with the question cosine of the sentences the generator
embeds (the ``EMBED_CANDIDATES`` lexically best; the rest carry the lowest, as in production). Reported:

- **ceilings**: the share of questions with a gold-answer sentence among all candidates, among the embedded
  ones, in the top-1 passage, and as the top-1 passage's first sentence;
- **first-sentence presence** (the chosen sentence holds a gold answer, SQuAD normalisation) of the hand
  weights and of the learned ranker (:mod:`llmfti.sentence_ranker`, hand prior), out of fold: two folds by
  article (:func:`evals.runner.article_folds`), each judged by the ranker fit on the other; once with all
  of the other fold's questions, once with ``--suite-size`` of them (the squad suite's scale), repeated;
- **token match** (on the first ``--token-match`` questions): the same MiniLM's *token* vectors, each
  question word's best cosine with the sentence's tokens, averaged (late interaction, as ColBERT scores
  passages), as the only score, and in place of the sentence cosine in the hand weights. The generator
  does not use it (yet): it costs a second forward pass per answer.

Sentence vectors are cached on disk (``<data-dir>/sentence_vectors``), keyed by the embedder.

    python -m benchmarks.sentence_ranker --questions 2000

Prints a table and writes ``benchmarks/results/sentence_ranker.json``. Measured 2026-11-30 (2,000 questions,
48 articles; ``--data-dir`` an index of all of SQuAD dev): ceilings 0.974 (any candidate), 0.944 (embedded
candidates), 0.765 (top-1 passage); first-sentence presence: hand weights 0.757, ranker 0.770 out of fold
(0.751 mean, 0.743 worst, of 5 draws of 125 training questions a fold); on the first 600 questions, the
sentence cosine alone 0.600, token max-sim alone 0.760, hand weights 0.743, hand weights with max-sim 0.760.
"""

from __future__ import annotations

import argparse
import pickle
import random
import time
from datetime import UTC, datetime
from pathlib import Path

from benchmarks import squad
from benchmarks.reporting import RESULTS_DIR, print_table, save

K = 10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=2000, help="seeded sample of SQuAD dev questions")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--suite-size", type=int, default=125, help="training questions per fold, small-scale run")
    parser.add_argument("--repeats", type=int, default=5, help="draws of the small-scale training set")
    parser.add_argument("--token-match", type=int, default=500, help="questions to measure token matching on")
    parser.add_argument("--data-dir", type=Path, default=RESULTS_DIR / "data" / "retrieval_quality",
                        help="where the SQuAD index lives (built first when missing)")
    parser.add_argument("--index", default="squad", help="its name (an index of all of SQuAD dev)")
    args = parser.parse_args()
    started = datetime.now(UTC)

    import numpy as np

    from evals.datasets import EvalRow
    from evals.metrics import normalize_answer
    from evals.runner import article_folds
    from llmfti.config import load_settings
    from llmfti.embedders.base import embedder_fingerprint
    from llmfti.index import VectorIndex
    from llmfti.llm.backends.answer_selection import candidates, select
    from llmfti.llm.backends.base import Passage
    from llmfti.llm.backends.extractive import EMBED_CANDIDATES
    from llmfti.llm.backends.sentence_features import FEATURES, candidate_features
    from llmfti.sentence_ranker import fit, hand_prior
    from pipelines.index_build import build_index

    settings = load_settings(data_dir=args.data_dir)
    try:
        index = VectorIndex.open(settings, args.index)
    except Exception:  # noqa: BLE001 - not built yet
        print(build_index(settings, [squad.SQUAD_DEV], args.index))
        index = VectorIndex.open(settings, args.index)
    embedder = index.embedder()
    article = {p.doc_id: p.title for p in squad.paragraphs()}
    answers_of = {q["id"]: [a["text"] for a in q["answers"]] for a in squad._raw()["data"]
                  for p in a["paragraphs"] for q in p["qas"]}
    questions = random.Random(args.seed).sample(squad.questions(), args.questions)

    t0 = time.perf_counter()
    vectors = np.asarray(embedder.encode([q.text for q in questions]), dtype=np.float32)
    found = []
    for q, vector in zip(questions, vectors, strict=True):
        hits = index.search(q.text, k=K, mode="hybrid", vector=vector).hits
        found.append([Passage(n=i + 1, chunk_id=h.chunk_id, doc_id=h.doc_id, text=h.text, score=h.score)
                      for i, h in enumerate(hits)])
    cache_file = args.data_dir / "sentence_vectors" / f"{embedder_fingerprint(embedder.info).replace('@', '-')}.pkl"
    cache = pickle.loads(cache_file.read_bytes()) if cache_file.is_file() else {}
    missing = sorted({c.sentence for passages in found for c in candidates(passages)} - cache.keys())
    if missing:
        cache.update(zip(missing, np.asarray(embedder.encode(missing), dtype=np.float32), strict=True))
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        cache_file.write_bytes(pickle.dumps(cache))
    retrieved_s = time.perf_counter() - t0

    def holds(sentence: str, gold: list[str]) -> bool:
        text = normalize_answer(sentence)
        return any(g in text for g in gold)

    rows = []
    for q, vector, passages in zip(questions, vectors, found, strict=True):
        cands = candidates(passages)
        if not cands:
            continue
        cosines = [float(vector @ cache[c.sentence]) for c in cands]
        embedded = set(range(len(cands)))
        if len(cands) > EMBED_CANDIDATES:  # as ExtractiveGenerator.similarities
            by_words = select(q.text, passages, len(cands), similarities=[0.0] * len(cands))
            position = {c: i for i, c in enumerate(cands)}
            embedded = {position[c] for c in by_words.chosen[:EMBED_CANDIDATES]}
            lowest = min(cosines[i] for i in embedded)
            cosines = [c if i in embedded else lowest for i, c in enumerate(cosines)]
        gold = [g for g in (normalize_answer(a) for a in answers_of[q.qid]) if g]
        labels = np.array([holds(c.sentence, gold) for c in cands])
        hand = select(q.text, passages, 1, similarities=cosines).chosen[0]
        rows.append({"question": q.text, "sentences": [c.sentence for c in cands], "cosines": np.array(cosines),
                     "title": article[q.doc_id], "labels": labels, "ranks": np.array([c.rank for c in cands]),
                     "embedded": np.array([i in embedded for i in range(len(cands))]),
                     "x": np.array(candidate_features(q.text, passages, cands, cosines)),
                     "hand": cands.index(hand)})
    n = len(rows)
    folds = article_folds([EvalRow(str(i), "", [], [], group=r["title"]) for i, r in enumerate(rows)])
    prior = hand_prior(FEATURES)

    def out_of_fold(limit: int | None, draw: int) -> tuple[float, object]:
        right, model = [], None
        for fold in (0, 1):
            train = [(r["x"], r["labels"]) for r, f in zip(rows, folds, strict=True) if f != fold]
            if limit is not None:
                train = random.Random(draw).sample(train, min(limit, len(train)))
            model = fit(train, FEATURES, prior=prior)
            for r, f in zip(rows, folds, strict=True):
                if f == fold:
                    scores = model.scores(r["x"])
                    right.append(bool(r["labels"][int(np.argmax(scores))]))
        return float(np.mean(right)), model

    ranked, model = out_of_fold(None, 0)
    small = [out_of_fold(args.suite_size, draw)[0] for draw in range(args.repeats)]
    hand = float(np.mean([r["labels"][r["hand"]] for r in rows]))
    token = token_match(rows[:args.token_match], prior) if args.token_match else {}
    results = {
        "questions": n, "articles": len({r["title"] for r in rows}),
        "ceiling_any_candidate": float(np.mean([r["labels"].any() for r in rows])),
        "ceiling_embedded_candidates": float(np.mean([r["labels"][r["embedded"]].any() for r in rows])),
        "ceiling_top1_passage": float(np.mean([r["labels"][r["ranks"] == 0].any() for r in rows])),
        "top1_passage_first_sentence": float(np.mean([r["labels"][0] for r in rows])),
        "first_sentence_presence_hand": hand,
        "first_sentence_presence_ranker_out_of_fold": ranked,
        "ranker_gain_points": round(100 * (ranked - hand), 2),
        f"first_sentence_presence_ranker_{args.suite_size}_per_fold_mean": float(np.mean(small)),
        f"first_sentence_presence_ranker_{args.suite_size}_per_fold_min": float(np.min(small)),
        **token,
        "weights_fold_b": dict(zip(FEATURES, (round(w, 3) for w in model.weights), strict=True)),
        "seconds_retrieve_embed": round(retrieved_s, 1),
    }
    print_table("which sentence answers (SQuAD dev, hybrid top 10)", ["measure", "value"],
                [(k, v) for k, v in results.items() if k != "weights_fold_b"],
                notes=["presence: the chosen sentence holds a gold answer (SQuAD normalisation); ranker figures are "
                       "out of fold (two folds by article)"])
    save("sentence_ranker", parameters=vars(args) | {"data_dir": str(args.data_dir)}, results=results,
         started=started)


def token_match(rows: list[dict], prior: list[float]) -> dict[str, float]:
    """First-sentence presence on ``rows`` by the sentence cosine alone, by token max-sim alone, by the hand
    weights, and by the hand weights with max-sim in place of the cosine (weight 1, untuned)."""
    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer

    from llmfti.embedders.sentence_transformer import PACKAGED_MINILM, resolve_model_path
    from llmfti.llm.backends.answer_selection import _STOPWORDS
    from llmfti.llm.backends.sentence_features import FEATURES

    torch.set_num_threads(1)
    model = SentenceTransformer(resolve_model_path(PACKAGED_MINILM), device="cpu")

    def vectors(texts: list[str], content_only: bool) -> list:
        out = []
        tokens = model.tokenizer(texts, truncation=True, max_length=256)["input_ids"]
        for states, ids in zip(model.encode(texts, output_value="token_embeddings", batch_size=32), tokens,
                               strict=True):
            states = np.asarray(states)[1:-1]
            pieces = model.tokenizer.convert_ids_to_tokens(ids)[1:-1]
            keep = [i for i, t in enumerate(pieces) if t.isalnum() and t not in _STOPWORDS] if content_only else []
            states = states[keep] if keep else states
            out.append(states / np.linalg.norm(states, axis=1, keepdims=True))
        return out

    sentences = sorted({s for r in rows for s, e in zip(r["sentences"], r["embedded"], strict=True) if e})
    of_sentence = dict(zip(sentences, vectors(sentences, False), strict=True))
    questions = vectors([r["question"] for r in rows], True)
    hand = np.array(prior)
    cosine = FEATURES.index("cosine")
    picks: dict[str, list[bool]] = {"cosine": [], "token_maxsim": [], "hand": [], "hand_with_token_maxsim": []}
    for r, q in zip(rows, questions, strict=True):
        maxsim = np.array([float((q @ of_sentence[s].T).max(axis=1).mean()) if e else np.nan
                           for s, e in zip(r["sentences"], r["embedded"], strict=True)])
        maxsim[np.isnan(maxsim)] = np.nanmin(maxsim)
        by_hand = r["x"] @ hand
        for name, scores in (("cosine", r["cosines"]), ("token_maxsim", maxsim), ("hand", by_hand),
                             ("hand_with_token_maxsim", by_hand - hand[cosine] * r["x"][:, cosine] + maxsim)):
            picks[name].append(bool(r["labels"][int(np.argmax(scores))]))
    return {"token_match_questions": len(rows),
            **{f"first_sentence_presence_by_{k}": float(np.mean(v)) for k, v in picks.items()}}


if __name__ == "__main__":
    main()
