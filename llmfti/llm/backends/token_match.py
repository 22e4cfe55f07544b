"""Token max-sim: how well a sentence answers a question, word by word (late interaction, as ColBERT).

Each content word piece of the question (not a stopword, not a continuation ``##piece``, not punctuation)
is matched with its closest token of the sentence (cosine of the embedder's contextual token vectors);
the score is the mean of those best matches. A sentence that mentions every thing the question asks
about scores high even when the sentence as a whole is about something else, which the cosine of the two
pooled vectors misses: on 600 SQuAD dev questions (hybrid top 10) max-sim alone picked a sentence holding
the answer for 0.760 of them, the pooled cosine alone for 0.600 (``python -m benchmarks.sentence_ranker``).

The vectors come from :meth:`Embedder.encode_tokens` (:class:`~llmfti.embedders.base.TokenEncoding`): the
question's from the same forward pass as its retrieval vector, the sentences' for a few candidates only
(the extractive generator's ``token_match_candidates``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from llmfti.llm.backends.answer_selection import _STOPWORDS

if TYPE_CHECKING:
    import numpy as np

    from llmfti.embedders.base import TokenEncoding


def question_rows(question: TokenEncoding) -> np.ndarray:
    """The question's token vectors that are matched: content word pieces (all of them when it has none)."""
    import numpy as np

    keep = [i for i, piece in enumerate(question.pieces) if piece.isalnum() and piece.lower() not in _STOPWORDS]
    rows = question.tokens[keep] if keep else question.tokens
    return np.asarray(rows, dtype=np.float32)


def max_sim(question: TokenEncoding, sentences: Sequence[TokenEncoding]) -> list[float]:
    """Per sentence: the mean over the question's content tokens of their best cosine with its tokens."""
    import numpy as np

    rows = question_rows(question)
    out = []
    for sentence in sentences:
        tokens = np.asarray(sentence.tokens, dtype=np.float32)
        if not len(rows) or not len(tokens):
            out.append(0.0)
            continue
        out.append(float((rows @ tokens.T).max(axis=1).mean()))
    return out
