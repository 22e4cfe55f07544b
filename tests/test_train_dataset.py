"""`llmfti dataset build`: SQuAD -> instruction feature group -> frozen TrainingDataset -> training."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmfti.errors import InvalidInputError
from tests.conftest import SQUAD_DEV
from tests.tiny_llm import build_llama, build_tokenizer

pytestmark = pytest.mark.skipif(not SQUAD_DEV.is_file(), reason="shared SQuAD dev set not present")


def test_squad_to_frozen_training_dataset_to_model_version(settings, tmp_path: Path) -> None:
    from llmfti.llm.tokenization import load_tokenizer
    from pipelines.instruction_dataset import build_instruction_dataset, training_dataset_rows
    from pipelines.train import load_train_config, train_and_register

    summary = build_instruction_dataset(settings, SQUAD_DEV, limit=40, dataset="squad_small")
    assert (summary["rows_written"], summary["rows_quarantined"], summary["num_rows"]) == (40, 0, 40)
    assert summary["training_dataset"] == "squad_small" and len(summary["rows_sha256"]) == 64

    rows, lineage = training_dataset_rows(settings, "squad_small")
    assert len(rows) == 40
    first = rows[0]
    assert first["answer"] == "Denver Broncos"
    assert [m["role"] for m in first["messages"]] == ["system", "user"]
    assert first["messages"][-1]["content"] == "Which NFL team represented the AFC at Super Bowl 50?"
    assert "[1] (Super_Bowl_50#0) Super Bowl 50 was an American football game" in first["messages"][0]["content"]
    assert lineage["prompt_id"].startswith("rag_answer@")
    assert lineage["feature_groups"] == {"squad_qa@v2": summary["data_version"]}

    # more data arriving later does not change the frozen dataset
    build_instruction_dataset(settings, SQUAD_DEV, limit=60, dataset="squad_more")
    assert training_dataset_rows(settings, "squad_small")[0] == rows
    with pytest.raises(InvalidInputError, match="already exists"):
        build_instruction_dataset(settings, SQUAD_DEV, limit=5, dataset="squad_small")

    tok = build_tokenizer(tmp_path / "tok")
    base = build_llama(tmp_path / "base", vocab_size=len(load_tokenizer(tok).tokenizer))
    config = load_train_config("cpu-tiny", max_steps=2, max_length=256, eval_fraction=0.2)
    result = train_and_register(settings, base=str(base), tokenizer=str(tok), dataset="squad_small",
                                config=config, show_progress=False)
    mv = result["model_version"]
    assert mv["training_dataset_id"] == "training_dataset:squad_small"
    assert mv["data_versions"]["rows_sha256"] == summary["rows_sha256"]
    assert mv["data_versions"]["prompt_id"] == lineage["prompt_id"]
    assert result["metrics"]["data_train_examples"] + result["metrics"]["data_eval_examples"] == 40
