"""A suite is a YAML file in ``evals/suites/``: dataset, index, retrieval, metrics, thresholds."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

from llmfti.errors import ConfigError, NotFoundError

EVALS_DIR = Path(__file__).resolve().parent
REPO_ROOT = EVALS_DIR.parent
SUITES_DIR = EVALS_DIR / "suites"


class DatasetSpec(BaseModel):
    model_config = {"extra": "forbid"}
    kind: Literal["squad", "squad_followups", "golden"]
    path: str = Field(description="Relative to the repository root (e.g. ../shared/data/... for SQuAD).")
    sample: int | None = Field(None, ge=1, description="Questions evaluated (seeded sample); null: all.")
    seed: int = 0
    unanswerable: int | None = Field(
        0, ge=0, description="Questions about the articles the index holds out (index.hold_out_articles), asked as "
        "unanswerable rows whose right answer is \"I don't know\" (seeded sample; null: all).")


class IndexSpec(BaseModel):
    model_config = {"extra": "forbid"}
    name: str
    sources: list[str] = Field(description="Paths (relative to the repo root) the suite's index is built from.")
    hold_out_articles: int = Field(
        0, ge=0, description="SQuAD-format sources only: this many articles (seeded by hold_out_seed) are left out "
        "of the index; questions about them are the suite's unanswerable rows (dataset.unanswerable).")
    hold_out_seed: int = 0


class Suite(BaseModel):
    model_config = {"extra": "forbid"}
    name: str
    description: str = ""
    dataset: DatasetSpec
    index: IndexSpec
    retrieval_mode: Literal["dense", "fts", "hybrid"] = "hybrid"
    retrieval_k: int = Field(10, ge=1, le=100)
    prompt: str = "rag_answer"
    metrics: list[str]
    thresholds: dict[str, float] = Field(default_factory=dict, description="Absolute minimum per metric.")
    tolerance: float = Field(0.02, ge=0, description="Allowed drop below the baseline, per metric.")
    max_unmeasured: int = Field(0, ge=0, description="Rows a metric may leave unmeasured (NaN) before failing.")
    calibrate_abstention: bool = Field(
        False, description="Record the extractive abstention model of this suite's index, fit on its answerable and "
        "unanswerable questions (llmfti/answer_calibration.py); the agent serving that index uses it.")
    token_match_candidates: int | None = Field(
        None, ge=0, le=100, description="agent.generator.token_match_candidates for this suite's runs (token max-sim "
        "reranking of the extractive answer's best candidates); None: the setting in effect.")
    fit_sentence_ranker: bool = Field(
        False, description="Fit the extractive sentence ranker of this suite's index on its answerable questions' "
        "candidate sentences (llmfti/sentence_ranker.py), judge it out of fold by article, and record the one fit "
        "on all rows; the agent serving that index uses it.")

    @model_validator(mode="after")
    def _held_out_rows_need_held_out_articles(self) -> Suite:
        if self.dataset.unanswerable != 0 and not self.index.hold_out_articles:
            raise ValueError("dataset.unanswerable needs index.hold_out_articles > 0 (the articles they are about)")
        if self.index.hold_out_articles and len(self.index.sources) != 1:
            raise ValueError("index.hold_out_articles needs exactly one SQuAD-format source file")
        if self.calibrate_abstention and self.dataset.unanswerable == 0:
            raise ValueError("calibrate_abstention needs unanswerable rows (dataset.unanswerable and "
                             "index.hold_out_articles) to fit the abstention model on")
        return self

    def resolve(self, relative: str) -> Path:
        return (REPO_ROOT / relative).resolve()


def suite_names() -> list[str]:
    return sorted(p.stem for p in SUITES_DIR.glob("*.yaml"))


def load_suite(name_or_path: str) -> Suite:
    path = Path(name_or_path)
    if not path.suffix:
        path = SUITES_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise NotFoundError(f"no eval suite {name_or_path!r}", expected=f"one of {suite_names()}",
                            fix="pick a suite from evals/suites/ or pass a suite YAML path")
    try:
        suite = Suite.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    except (ValidationError, yaml.YAMLError) as exc:
        raise ConfigError(f"eval suite {path} is invalid: {exc}", fix="correct the suite file") from exc
    from evals.metrics import METRICS

    unknown = [m for m in [*suite.metrics, *suite.thresholds] if m not in METRICS]
    if unknown:
        raise ConfigError(f"suite {suite.name!r} names unknown metrics {unknown}", expected=f"any of {sorted(METRICS)}")
    return suite
