"""Calibrated abstention thresholds, recorded per index by eval runs and read by the agent.

An extractive answer's *evidence* is the cosine between the question and its best sentence
(:mod:`llmfti.llm.backends.answer_selection`). What counts as close depends on the embedder *and*
on the corpus: SQuAD questions share many words with their sentences (answerable questions sit at
0.4-0.8 with MiniLM), questions about terse technical docs do not (0.3-0.5), off-topic questions sit
near 0.1 in both. So the threshold is stored with the index's eval results: an eval suite with
``calibrate_abstention`` takes the evidence of its answerable questions (those whose gold passage
was retrieved) and records, for its index and embedder, the value that keeps ``answer_rate`` of them
answered. The agent uses the latest calibration of the index and embedder it serves; without one,
the ``agent.generator.abstain_below`` setting (a low, conservative default).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from llmfti.errors import InvalidInputError
from llmfti.lance import connect, escape_literal, table_names

if TYPE_CHECKING:
    from llmfti.config import Settings

TABLE = "answer_calibrations"
DEFAULT_ANSWER_RATE = 0.95


@dataclass(frozen=True)
class Calibration:
    index: str  # the index name the suite evaluated
    embedder: str  # the index's embedder (llmfti.embedders.base.embedder_fingerprint)
    abstain_below: float
    answer_rate: float
    questions: int
    source: str  # e.g. the eval run id
    created_at: datetime


def calibrate(evidence: Sequence[float], *, index: str, embedder: str, source: str,
              answer_rate: float = DEFAULT_ANSWER_RATE) -> Calibration:
    """The threshold that keeps ``answer_rate`` of these (answerable) questions answered."""
    values = sorted(v for v in evidence if v is not None and not math.isnan(v))
    if len(values) < 20:
        raise InvalidInputError(f"{len(values)} answerable questions are too few to calibrate abstention",
                                expected="at least 20", fix="calibrate on a larger eval suite (e.g. squad)")
    position = (1.0 - answer_rate) * (len(values) - 1)
    low, high = math.floor(position), math.ceil(position)
    threshold = values[low] + (values[high] - values[low]) * (position - low)
    return Calibration(index, embedder, round(threshold, 4), answer_rate, len(values), source, datetime.now(UTC))


def _schema() -> Any:
    import pyarrow as pa

    return pa.schema([("index", pa.string()), ("embedder", pa.string()), ("abstain_below", pa.float64()),
                      ("answer_rate", pa.float64()),
                      ("questions", pa.int64()), ("source", pa.string()),
                      ("created_at", pa.timestamp("us", tz="UTC"))])


def record(settings: Settings, calibration: Calibration) -> None:
    db = connect(settings)
    table = db.create_table(TABLE, schema=_schema(), exist_ok=True)
    table.add([asdict(calibration)])


def latest(settings: Settings, index: str, embedder: str) -> Calibration | None:
    """The most recent calibration recorded for ``index`` filled by ``embedder``, if any."""
    db = connect(settings)
    if TABLE not in table_names(db):
        return None
    where = f"index = {escape_literal(index)} AND embedder = {escape_literal(embedder)}"
    rows = db.open_table(TABLE).search().where(where).limit(None).to_list()
    if not rows:
        return None
    row = max(rows, key=lambda r: r["created_at"])
    return Calibration(**{k: row[k] for k in Calibration.__dataclass_fields__})


def abstain_threshold(settings: Settings, index: str, embedder: str | None) -> tuple[float | None, str]:
    """(threshold or None when abstention is off, where it came from) for the index served."""
    generator = settings.agent.generator
    if not generator.abstain:
        return None, "off (agent.generator.abstain = false)"
    found = latest(settings, index, embedder) if embedder else None
    if found is not None:
        return found.abstain_below, f"calibration {found.source} ({found.questions} questions)"
    return generator.abstain_below, "setting agent.generator.abstain_below (no calibration recorded for this index)"
