from pathlib import Path

import pytest

from llmfti.config import Settings, load_settings, read_yaml
from llmfti.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_settings_yaml_loads(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMFTI_CONFIG", str(path))
    settings = load_settings()
    assert isinstance(settings, Settings)
    # every key in the file was understood (extra keys are forbidden, so this is a real check)
    assert set(read_yaml(path)) <= set(Settings.model_fields)


def test_precedence_env_over_yaml_over_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("index:\n  name: from_yaml\n  default_k: 7\n")
    monkeypatch.setenv("LLMFTI_CONFIG", str(cfg))
    assert load_settings().index.name == "from_yaml"
    monkeypatch.setenv("LLMFTI_INDEX__NAME", "from_env")
    settings = load_settings()
    assert settings.index.name == "from_env"
    assert settings.index.default_k == 7
    assert load_settings(index={"name": "explicit"}).index.name == "explicit"


def test_bad_values_give_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("embedder:\n  batch_size: 0\n")
    monkeypatch.setenv("LLMFTI_CONFIG", str(cfg))
    with pytest.raises(ConfigError, match=r"embedder.batch_size.*got 0"):
        load_settings()
    cfg.write_text("no_such_setting: 1\n")
    with pytest.raises(ConfigError, match="no_such_setting"):
        load_settings()
    monkeypatch.setenv("LLMFTI_CONFIG", str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match="not a file"):
        load_settings()


def test_unsafe_index_name_refused() -> None:
    with pytest.raises(ConfigError, match="index name"):
        load_settings(index={"name": "x; drop table"})
