"""Shared fixtures: every test gets its own data_dir; nothing touches the real one."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAGAS_DO_NOT_TRACK", "true")

REPO = Path(__file__).resolve().parents[1]
SQUAD_DEV = REPO.parent / "shared" / "data" / "squad-v1.1-dev" / "dev-v1.1.json"


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh data_dir, also exported as LLMFTI_DATA_DIR for CLI subprocesses."""
    path = tmp_path / "data"
    monkeypatch.setenv("LLMFTI_DATA_DIR", str(path))
    return path


@pytest.fixture
def settings(data_dir: Path):
    from llmfti.config import load_settings

    return load_settings(data_dir=data_dir)
