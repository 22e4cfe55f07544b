"""A suite is a YAML file in ``evals/suites/``: dataset, index, retrieval, metrics, thresholds."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, Field, ValidationError

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


class IndexSpec(BaseModel):
    model_config = {"extra": "forbid"}
    name: str
    sources: list[str] = Field(description="Paths (relative to the repo root) the suite's index is built from.")


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
        False, description="Record the extractive abstention threshold of this suite's index from its answerable "
        "questions (llmfti/answer_calibration.py); the agent serving that index uses it.")

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
