"""Learned sentence ranking: which candidate sentence answers, a small model per index and embedder.

The extractive generator answers with the sentence it ranks first. Without a model it ranks by one
hand-weighted score (:mod:`llmfti.llm.backends.answer_selection`). A :class:`SentenceRanker` is a linear
listwise model over :data:`llmfti.llm.backends.sentence_features.FEATURES`: within one question's
candidates, P(sentence) = softmax(weights . standardised features); fit with numpy (Newton's method,
ridge penalty) on an index's own eval questions, the target spread evenly over the candidate sentences
that hold a gold answer (SQuAD normalisation), questions with none left out. An eval suite with
``calibrate_abstention`` fits it out of fold by article (``evals/runner.py``) and records the model fit
on all its answerable rows for its index and embedder (table ``sentence_rankers``, beside the
``abstention_models`` of :mod:`llmfti.answer_calibration`); the agent serving that index loads the
latest one and falls back to the hand weights when none exists.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from llmfti.errors import InvalidInputError
from llmfti.lance import connect, newest_row, open_or_create_table

if TYPE_CHECKING:
    from llmfti.config import Settings

TABLE = "sentence_rankers"
MIN_QUESTIONS = 30  # answerable questions with answering and other candidates
PRIOR_STRENGTH = 10.0  # ridge penalty = this / questions: the prior weighs as much as ~10 questions


@dataclass(frozen=True)
class SentenceRanker:
    """score(sentence) = sum(weight * (value - mean) / scale); the highest score answers."""

    features: tuple[str, ...]
    means: tuple[float, ...]
    scales: tuple[float, ...]
    weights: tuple[float, ...]
    questions: int = 0  # questions it was fit on
    learned: bool = True  # False: HAND_RANKING (the hand weights rank; features are only reported)
    join_within: float = 0.1  # a further sentence joins the answer when it scores within this of the best

    def scores(self, rows: Sequence[Sequence[float]]) -> list[float]:
        """Score per candidate; ``rows`` are feature vectors in :attr:`features` order."""
        out = []
        for row in rows:
            if len(row) != len(self.features):
                raise InvalidInputError(f"a candidate has {len(row)} features",
                                        expected=f"{len(self.features)}: {self.features}",
                                        fix="compute them with sentence_features.candidate_features")
            out.append(sum(w * (float(v) - m) / s for v, m, s, w in
                           zip(row, self.means, self.scales, self.weights, strict=True)))
        return out

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> SentenceRanker:
        data = json.loads(text)
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def hand_prior(features: Sequence[str]) -> list[float]:
    """The hand weights of :class:`answer_selection.Weights` over ``features`` (raw units; 0 for the others)."""
    from llmfti.llm.backends.answer_selection import Weights

    hand = Weights()
    known = {"cosine": hand.meaning, "bm25": hand.words, "rank_prior": hand.rank, "answer_type": hand.answer_type,
             "coverage": hand.coverage, "word_pairs": hand.word_pairs}
    return [known.get(f, 0.0) for f in features]


def fit(questions: Sequence[tuple[Sequence[Sequence[float]], Sequence[bool]]], features: Sequence[str], *,
        l2: float | None = None, prior: Sequence[float] | None = None, join_within: float = 0.1,
        ) -> SentenceRanker:
    """Listwise logistic (softmax) ranker from (candidate feature rows, holds-a-gold-answer flags) per question.

    ``prior`` (raw-unit weights, e.g. :func:`hand_prior`): the ridge penalty pulls the weights towards the prior
    (scaled by its own best-fitting temperature) instead of towards zero, so a few questions move the ranking
    only as far as they show, and the model without evidence is the prior's ranking. ``l2`` defaults to
    :data:`PRIOR_STRENGTH` / questions. ``join_within`` is the prior's join margin (the extractive generator's
    ``CLOSE_SCORE``), stored in the ranker's units (times the prior's temperature)."""
    import numpy as np

    usable = [(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=bool)) for x, y in questions
              if len(x) and any(y) and not all(y)]
    if len(usable) < MIN_QUESTIONS:
        raise InvalidInputError(
            f"{len(usable)} questions with both answering and other candidate sentences are too few to fit a "
            "sentence ranker", expected=f"at least {MIN_QUESTIONS}",
            fix="fit on a larger eval suite with reference answers (e.g. squad)")
    for x, _ in usable:
        if x.shape[1] != len(features):
            raise InvalidInputError(f"candidate rows have {x.shape[1]} features", expected=f"{len(features)}")
    stacked = np.vstack([x for x, _ in usable])
    means, scales = stacked.mean(axis=0), stacked.std(axis=0)
    scales[scales < 1e-9] = 1.0
    zs = [((x - means) / scales, y / y.sum()) for x, y in usable]
    l2 = PRIOR_STRENGTH / len(usable) if l2 is None else l2
    centre = np.zeros(len(features))
    temperature = 1.0
    if prior is not None:
        direction = np.asarray(prior, dtype=np.float64) * scales
        (fitted,) = _newton([(z @ direction[:, None], t) for z, t in zs], np.zeros(1), 1e-6)
        temperature = max(0.0, float(fitted))
        centre = temperature * direction
    w = _newton(zs, centre, l2)
    return SentenceRanker(tuple(features), tuple(float(m) for m in means), tuple(float(s) for s in scales),
                          tuple(float(v) for v in w), len(usable),
                          join_within=round(join_within * temperature, 6) if temperature > 0 else join_within)


def _newton(zs: list[tuple[Any, Any]], centre: Any, l2: float) -> Any:
    """Weights minimising the mean softmax cross-entropy + l2/2 * |w - centre|^2 (Newton, backtracking)."""
    import numpy as np

    dims = len(centre)
    penalty = l2 * np.eye(dims)

    def loss(w: Any) -> float:
        total = 0.5 * l2 * float((w - centre) @ (w - centre))
        for z, target in zs:
            s = z @ w
            top = s.max()
            total -= float(target @ (s - top - math.log(np.exp(s - top).sum()))) / len(zs)
        return total

    w = np.array(centre, dtype=np.float64)
    current = loss(w)
    for _ in range(100):
        gradient = penalty @ (w - centre)
        hessian = penalty.copy()
        for z, target in zs:
            s = z @ w
            p = np.exp(s - s.max())
            p /= p.sum()
            gradient += z.T @ (p - target) / len(zs)
            weighted = z * p[:, None]
            hessian += (z.T @ weighted - np.outer(weighted.sum(axis=0), weighted.sum(axis=0))) / len(zs)
        step = np.linalg.solve(hessian, gradient)
        size = 1.0  # Newton's step, halved until the loss falls (backtracking)
        while size > 1e-6 and loss(w - size * step) > current - 1e-4 * size * float(gradient @ step):
            size /= 2
        if size <= 1e-6:
            break
        w -= size * step
        current = loss(w)
        if float(np.abs(size * step).max()) < 1e-6:
            break
    return w


HAND_RANKING = SentenceRanker((), (), (), (), learned=False)
"""Ranks by the hand weights and reports every candidate's features (the first pass of an eval run)."""


@dataclass(frozen=True)
class RankerRecord:
    index: str  # the index name the suite evaluated
    embedder: str  # the index's embedder (llmfti.embedders.base.embedder_fingerprint)
    model: SentenceRanker
    source: str  # e.g. the eval run id
    created_at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "model": asdict(self.model)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RankerRecord:
        model = data["model"]
        model = SentenceRanker.from_json(json.dumps(model)) if isinstance(model, dict) else model
        return cls(**{**data, "model": model})


def _schema() -> Any:
    import pyarrow as pa

    return pa.schema([("index", pa.string()), ("embedder", pa.string()), ("model", pa.string()),
                      ("source", pa.string()), ("created_at", pa.timestamp("us", tz="UTC"))])


def record(settings: Settings, ranker: RankerRecord) -> None:
    table = open_or_create_table(connect(settings), TABLE, _schema())
    table.add([{**asdict(ranker), "model": ranker.model.to_json()}])


def latest(settings: Settings, index: str, embedder: str) -> RankerRecord | None:
    """The most recent ranker recorded for ``index`` filled by ``embedder``, if any."""
    row = newest_row(settings, TABLE, index=index, embedder=embedder)
    if row is None:
        return None
    fields = {k: row[k] for k in RankerRecord.__dataclass_fields__}
    return RankerRecord(**{**fields, "model": SentenceRanker.from_json(row["model"])})


def ranking_rule(settings: Settings, index: str, embedder: str | None) -> tuple[SentenceRanker | None, str]:
    """(ranker, where it came from) for the index served: the latest recorded for this index and embedder whose
    features this version measures, else None (the hand-weighted score)."""
    from llmfti import answer_calibration
    from llmfti.llm.backends.sentence_features import FEATURES

    found = latest(settings, index, embedder) if embedder else None
    if found is None:
        return None, "hand-weighted selection (none recorded for this index)"
    if tuple(found.model.features) != FEATURES:
        return None, "hand-weighted selection (the recorded ranker uses other features)"
    # The abstention model weighs the evidence of the sentences it was fit on: one recorded by a later run that
    # did not fit a ranker was fit on hand-picked sentences, so the ranker would not match it.
    calibration = answer_calibration.latest(settings, index, embedder)
    if calibration is not None and calibration.source != found.source and calibration.created_at > found.created_at:
        return None, (f"hand-weighted selection (abstention calibration {calibration.source} is newer than ranker "
                      f"{found.source} and was fit without it)")
    return found.model, f"sentence ranker {found.source} ({found.model.questions} questions)"


def softmax_confidence(scores: Sequence[float]) -> float:
    """Probability the model gives its best candidate."""
    top = max(scores)
    return 1.0 / sum(math.exp(s - top) for s in scores)
