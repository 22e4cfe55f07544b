"""Calibrated abstention: a small model per index and embedder, fit by eval runs, read by the agent.

Whether retrieved passages answer a question cannot be read off one score: SQuAD questions share
many words and names with their sentences, questions about terse technical docs do not, and an
off-topic question can still land on a sentence that is close in meaning. So the extractive
generator measures several *evidence features* of its selection
(:data:`llmfti.llm.backends.answer_selection.EVIDENCE_FEATURES`), and an :class:`AbstentionModel`
(logistic regression over the standardised features, fit with numpy) turns them into an
*answerability*. The model is fit on the index's own eval questions: answerable ones, and ones about
articles the suite left out of the index (their right answer is "I don't know"). Its threshold keeps
``answer_rate`` of the answerable questions answered. An eval suite with ``calibrate_abstention``
records the fitted model for its index and embedder (table ``abstention_models``); the agent uses the
latest one of the index and embedder it serves. Without one, the best question-sentence cosine is
compared with the ``agent.generator.abstain_below`` setting (a low, conservative default).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from llmfti.errors import InvalidInputError
from llmfti.lance import connect, newest_row, open_or_create_table

if TYPE_CHECKING:
    from llmfti.config import Settings

TABLE = "abstention_models"
# kept answered on the questions fit on: out of fold, 0.96 answered >= 95% of answerable SQuAD questions (0.95: 93.4%)
DEFAULT_ANSWER_RATE = 0.96
MIN_QUESTIONS = 20  # of each kind, answerable and unanswerable
L2 = 0.01  # ridge penalty on the standardised weights: a few hundred questions, a handful of features


@dataclass(frozen=True)
class AbstentionModel:
    """Answerability = sigmoid(bias + sum(weight * (value - mean) / scale)); abstain below ``threshold``."""

    features: tuple[str, ...]
    means: tuple[float, ...]
    scales: tuple[float, ...]
    weights: tuple[float, ...]
    bias: float
    threshold: float

    def answerability(self, values: Mapping[str, float]) -> float:
        missing = [f for f in self.features if f not in values]
        if missing:
            raise InvalidInputError(f"evidence features {missing} are missing", expected=f"all of {self.features}",
                                    fix="measure them with answer_selection.select(..., similarities=...)")
        z = self.bias + sum(w * (float(values[f]) - m) / s for f, m, s, w in
                            zip(self.features, self.means, self.scales, self.weights, strict=True))
        return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, z))))

    def abstains(self, values: Mapping[str, float]) -> bool:
        return self.answerability(values) < self.threshold

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> AbstentionModel:
        data = json.loads(text)
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def threshold_keeping(values: Sequence[float], answer_rate: float) -> float:
    """The value at or above which ``answer_rate`` of ``values`` lie (linear interpolation)."""
    ordered = sorted(values)
    position = (1.0 - answer_rate) * (len(ordered) - 1)
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def fit(answerable: Sequence[Mapping[str, float]], unanswerable: Sequence[Mapping[str, float]],
        features: Sequence[str], *, answer_rate: float = DEFAULT_ANSWER_RATE, l2: float = L2) -> AbstentionModel:
    """Logistic regression (Newton's method, ridge ``l2``) separating answerable from unanswerable questions,
    with the threshold that keeps ``answer_rate`` of the answerable ones answered."""
    import numpy as np

    if len(answerable) < MIN_QUESTIONS or len(unanswerable) < MIN_QUESTIONS:
        raise InvalidInputError(
            f"{len(answerable)} answerable and {len(unanswerable)} unanswerable questions are too few to calibrate "
            "abstention", expected=f"at least {MIN_QUESTIONS} of each",
            fix="calibrate on a larger eval suite (e.g. squad, which leaves articles out of its index)")
    if not 0.5 <= answer_rate < 1.0:
        raise InvalidInputError(f"answer_rate {answer_rate} is out of range", expected="0.5 <= answer_rate < 1")
    x = np.array([[float(v[f]) for f in features] for v in [*answerable, *unanswerable]])
    y = np.r_[np.ones(len(answerable)), np.zeros(len(unanswerable))]
    means, scales = x.mean(axis=0), x.std(axis=0)
    scales[scales < 1e-9] = 1.0
    z = np.hstack([(x - means) / scales, np.ones((len(x), 1))])
    penalty = np.diag(np.r_[np.full(len(features), l2), 0.0])
    w = np.zeros(z.shape[1])
    for _ in range(100):
        p = 1.0 / (1.0 + np.exp(-np.clip(z @ w, -60, 60)))
        gradient = z.T @ (p - y) / len(y) + penalty @ w
        hessian = (z * (p * (1 - p))[:, None]).T @ z / len(y) + penalty
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if float(np.abs(step).max()) < 1e-8:
            break
    model = AbstentionModel(tuple(features), tuple(float(m) for m in means), tuple(float(s) for s in scales),
                            tuple(float(v) for v in w[:-1]), float(w[-1]), 0.0)
    kept = threshold_keeping([model.answerability(v) for v in answerable], answer_rate)
    return AbstentionModel(**{**asdict(model), "threshold": round(kept, 6)})


@dataclass(frozen=True)
class Calibration:
    index: str  # the index name the suite evaluated
    embedder: str  # the index's embedder (llmfti.embedders.base.embedder_fingerprint)
    model: AbstentionModel
    answer_rate: float
    questions: int  # answerable questions it was fit on
    unanswerable: int  # unanswerable questions it was fit on
    source: str  # e.g. the eval run id
    created_at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "model": asdict(self.model)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Calibration:
        model = data["model"]
        model = AbstentionModel.from_json(json.dumps(model)) if isinstance(model, Mapping) else model
        return cls(**{**data, "model": model})


def calibrate(answerable: Sequence[Mapping[str, float]], unanswerable: Sequence[Mapping[str, float]],
              features: Sequence[str], *, index: str, embedder: str, source: str,
              answer_rate: float = DEFAULT_ANSWER_RATE) -> Calibration:
    model = fit(answerable, unanswerable, features, answer_rate=answer_rate)
    return Calibration(index, embedder, model, answer_rate, len(answerable), len(unanswerable), source,
                       datetime.now(UTC))


def _schema() -> Any:
    import pyarrow as pa

    return pa.schema([("index", pa.string()), ("embedder", pa.string()), ("model", pa.string()),
                      ("answer_rate", pa.float64()), ("questions", pa.int64()), ("unanswerable", pa.int64()),
                      ("source", pa.string()), ("created_at", pa.timestamp("us", tz="UTC"))])


def record(settings: Settings, calibration: Calibration) -> None:
    table = open_or_create_table(connect(settings), TABLE, _schema())
    table.add([{**asdict(calibration), "model": calibration.model.to_json()}])


def latest(settings: Settings, index: str, embedder: str) -> Calibration | None:
    """The most recent calibration recorded for ``index`` filled by ``embedder``, if any."""
    row = newest_row(settings, TABLE, index=index, embedder=embedder)
    if row is None:
        return None
    fields = {k: row[k] for k in Calibration.__dataclass_fields__}
    return Calibration(**{**fields, "model": AbstentionModel.from_json(row["model"])})


def abstention_rule(settings: Settings, index: str, embedder: str | None,
                    ) -> tuple[AbstentionModel | None, float | None, str]:
    """(model, cosine threshold, where they came from) for the index served: a calibrated model when one
    was recorded for this index and embedder, else the ``abstain_below`` setting; (None, None) when off."""
    from llmfti.llm.backends.answer_selection import EVIDENCE_FEATURES

    generator = settings.agent.generator
    if not generator.abstain:
        return None, None, "off (agent.generator.abstain = false)"
    found = latest(settings, index, embedder) if embedder else None
    if found is not None and set(found.model.features) <= set(EVIDENCE_FEATURES):
        return found.model, None, (f"calibration {found.source} ({found.questions} answerable, "
                                   f"{found.unanswerable} unanswerable questions)")
    why = "no calibration recorded for this index" if found is None else (
        f"calibration {found.source} uses features this version does not measure")
    return None, generator.abstain_below, f"setting agent.generator.abstain_below ({why})"
