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
  passages; :mod:`llmfti.llm.backends.token_match`, the code the generator runs), as the only score, and
  the generator's way: max-sim measured for the top M candidates by the hand score and added to it, for a
  grid of M, max-sim weight and cosine weight, chosen on one fold of articles and reported on the other.

Sentence vectors are cached on disk (``<data-dir>/sentence_vectors``), keyed by the embedder.

    python -m benchmarks.sentence_ranker --questions 2000

Prints a table and writes ``benchmarks/results/sentence_ranker.json``. Measured 2026-11-30 (2,000 questions,
48 articles; ``--data-dir`` an index of all of SQuAD dev): ceilings 0.974 (any candidate), 0.944 (embedded
candidates), 0.765 (top-1 passage); first-sentence presence: hand weights 0.757, ranker 0.770 out of fold
(0.751 mean, 0.743 worst, of 5 draws of 125 training questions a fold); on the first 600 questions, the
sentence cosine alone 0.600, token max-sim alone 0.760, hand weights 0.743, hand weights with max-sim 0.760.
Token match, 2026-11-30 (``--questions 1200 --token-match 1200 --repeats 0 --data-dir /work/scratch/evalsquad
--index eval_squad``, 48 articles): cosine alone 0.626, max-sim alone (top 12) 0.763, hand weights 0.753; hand
weights + max-sim of the top M, weights chosen on the other fold: M=2 0.764, M=3 0.767, M=4 0.762, M=6 0.765,
M=8 0.765, M=12 0.764 (flat in M: the generator's default is M=3 with weights 4.0 max-sim + 1.0 cosine, 0.773
in sample; the best in-sample point, M=8 12.0/1.0, 0.777). So +1.3 to +1.5 points, not the +4 a 300-question
trial suggested. Token matching only where the hand score's lead is under 0.2 (``token_match_lead``): 31% of
the questions token-matched, presence 0.773 as with all (0.1: 17%, 0.769; 0.05: 9%, 0.762).
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
    import torch

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

    torch.set_num_threads(1)  # two threads on a shared 2-core machine are many times slower (STACK-NOTES)
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
    small = [out_of_fold(args.suite_size, draw)[0] for draw in range(args.repeats)] or [float("nan")]
    hand = float(np.mean([r["labels"][r["hand"]] for r in rows]))
    token = token_match(rows[:args.token_match], prior, embedder, folds[:args.token_match]) if args.token_match else {}
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
                [(k, v) for k, v in results.items() if k not in ("weights_fold_b", "presence_by_grid_point")],
                notes=["presence: the chosen sentence holds a gold answer (SQuAD normalisation); ranker figures are "
                       "out of fold (two folds by article)"])
    save("sentence_ranker", parameters=vars(args) | {"data_dir": str(args.data_dir)}, results=results,
         started=started)


def token_match(rows: list[dict], prior: list[float], embedder: object, folds: list[int],
                candidates_grid: tuple[int, ...] = (2, 3, 4, 6, 8, 12)) -> dict[str, object]:
    """First-sentence presence on ``rows`` by the sentence cosine alone, by token max-sim alone (over the
    embedded candidates), by the hand weights, and by the hand weights with max-sim measured for the top M
    candidates by the hand score (as the generator does: :mod:`llmfti.llm.backends.token_match`), for M in
    ``candidates_grid`` and a grid of (max-sim weight, cosine weight): chosen on one fold of articles, reported
    on the other (both ways)."""
    import numpy as np

    from llmfti.llm.backends.sentence_features import FEATURES
    from llmfti.llm.backends.token_match import max_sim

    hand = np.array(prior)
    cosine = FEATURES.index("cosine")
    deepest = max(candidates_grid)
    tops, texts = [], set()
    for r in rows:
        by_hand = r["x"] @ hand
        top = [int(i) for i in np.argsort(-by_hand, kind="stable")[:deepest]]
        tops.append(top)
        texts.update(r["sentences"][i] for i in top)
    texts = sorted(texts)
    questions = embedder.encode_tokens([r["question"] for r in rows])  # type: ignore[attr-defined]
    of_sentence = dict(zip(texts, embedder.encode_tokens(texts), strict=True))  # type: ignore[attr-defined]
    sims = []
    for r, q, top in zip(rows, questions, tops, strict=True):
        found = max_sim(q, [of_sentence[r["sentences"][i]] for i in top])
        sims.append(dict(zip(top, found, strict=True)))

    def picks(m: int, w_tok: float, w_cos: float) -> np.ndarray:
        out = []
        for r, top, measured in zip(rows, tops, sims, strict=True):
            kept = top[:m]
            lowest = min(measured[i] for i in kept)
            tok = np.array([measured[i] if i in kept else lowest for i in range(len(r["sentences"]))])
            base = r["x"] @ hand - hand[cosine] * r["x"][:, cosine]
            out.append(bool(r["labels"][int(np.argmax(base + w_cos * r["x"][:, cosine] + w_tok * tok))]))
        return np.array(out)

    folds_a = np.array(folds)
    by_alone = [bool(r["labels"][max(s, key=s.get)]) for r, s in zip(rows, sims, strict=True)]
    grid = [(m, wt, wc) for m in candidates_grid for wt in (1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0)
            for wc in (0.0, 0.5, 1.0, 1.5)]
    table = {g: picks(*g) for g in grid}
    out: dict[str, object] = {
        "token_match_questions": len(rows),
        "first_sentence_presence_by_cosine": float(np.mean([r["labels"][int(np.argmax(r["cosines"]))] for r in rows])),
        f"first_sentence_presence_by_token_maxsim_top{deepest}": float(np.mean(by_alone)),
        "first_sentence_presence_hand": float(np.mean([r["labels"][int(np.argmax(r["x"] @ hand))] for r in rows])),
    }
    for m in candidates_grid:  # per M: weights chosen on one fold, reported on the other
        report = []
        for fold in (0, 1):
            best = max((g for g in grid if g[0] == m), key=lambda g: (table[g][folds_a != fold].mean(), -g[1]))
            report.extend(table[best][folds_a == fold])
            out[f"token_match_M{m}_weights_chosen_on_fold_{1 - fold}"] = {"token_match": best[1],
                                                                          "meaning_beside_tokens": best[2]}
        out[f"first_sentence_presence_token_match_M{m}_out_of_fold"] = float(np.mean(report))
    # only when the hand score's lead is small: the share of answers that would pay for token vectors
    default = (3, 4.0, 1.0)  # the eval suites' M and answer_selection.Weights
    if default in table:
        lead = []
        for r in rows:
            by_hand = np.sort(r["x"] @ hand)[::-1]
            lead.append(by_hand[0] - by_hand[1] if len(by_hand) > 1 else np.inf)
        lead_a = np.array(lead)
        plain = np.array([bool(r["labels"][int(np.argmax(r["x"] @ hand))]) for r in rows])
        for below in (0.05, 0.1, 0.2, 0.3, 0.5):
            matched = lead_a < below
            out[f"token_match_M3_only_when_lead_below_{below}"] = {
                "presence": float(np.where(matched, table[default], plain).mean()),
                "share_token_matched": float(matched.mean())}
    best_all = max(grid, key=lambda g: table[g].mean())
    out["best_in_sample"] = {"M": best_all[0], "token_match": best_all[1], "meaning_beside_tokens": best_all[2],
                             "presence": float(table[best_all].mean())}
    out["presence_by_grid_point"] = {f"M{g[0]}_tok{g[1]}_cos{g[2]}": float(table[g].mean()) for g in grid}
    return out


if __name__ == "__main__":
    main()
