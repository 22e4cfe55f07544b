"""llmfti monitor: synthetic traffic in the real inference_log, a real index of the sample docs and
real MiniLM embeddings. A shifted stream (another topic, another user population) raises every drift
alert; an unshifted stream raises none; health statistics are exact; the CLI exits 3 on an alert."""

from __future__ import annotations

import json
import random
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from benchmarks.monitoring import DRIFT_ALERTS, build_docs_index, records, write_log

H0 = datetime(2026, 11, 2, 0, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def index_template(tmp_path_factory):
    import torch

    torch.set_num_threads(1)
    from llmfti.config import load_settings

    folder = tmp_path_factory.mktemp("monitor-index") / "data"
    settings = load_settings(data_dir=folder)
    return folder, build_docs_index(settings)


@pytest.fixture
def indexed(settings, index_template):
    folder, index = index_template
    shutil.copytree(folder / "lancedb", Path(settings.data_dir) / "lancedb")
    return settings, index


def test_shifted_stream_raises_drift_alerts_and_unshifted_stream_does_not(indexed) -> None:
    from llmfti.features.feature_group import FeatureGroup
    from pipelines.monitor import run_monitor, window_id

    settings, index = indexed
    rng = random.Random(7)
    hours = [H0 + timedelta(hours=h) for h in range(3)]
    write_log(settings, [*records(rng, start=hours[0], count=200, shifted=False, index_name=index[0],
                                  index_version=index[1]),
                         *records(rng, start=hours[1], count=200, shifted=False, index_name=index[0],
                                  index_version=index[1]),
                         *records(rng, start=hours[2], count=200, shifted=True, index_name=index[0],
                                  index_version=index[1])])
    result = run_monitor(settings, window="1h", reference="first")

    rows = {r["window_id"]: r for r in result.rows}
    reference, unshifted, shifted = (rows[window_id("1h", h)] for h in hours)
    assert result.reference == reference["window_id"]
    drift = set(DRIFT_ALERTS)
    assert not {a.split(":")[0] for a in unshifted["alerts"]} & drift, unshifted
    fired = {a.split(":")[0] for a in shifted["alerts"]}
    assert drift <= fired, shifted
    assert {"user_feature_drift:plan", "user_feature_drift:language"} <= set(shifted["alerts"])
    assert shifted["embedding_drift_p"] < settings.monitoring.drift_p_value < unshifted["embedding_drift_p"]
    assert shifted["out_of_coverage_share"] > 0.9 and unshifted["out_of_coverage_share"] < 0.25
    assert json.loads(unshifted["user_feature_psi"])["plan"] < 0.25 < json.loads(shifted["user_feature_psi"])["plan"]
    assert reference["embedding_drift_p"] is None  # the reference is not tested against itself

    group = FeatureGroup.open(settings, "monitoring")
    first_version = group.data_version
    again = run_monitor(settings, window="1h", since=H0)  # recompute: rows replaced, a new data version
    assert [r["window_id"] for r in again.rows] == [r["window_id"] for r in result.rows]
    assert group.count_rows() == 3 and group.data_version > first_version
    assert group.count_rows(first_version) == 3  # the earlier computation is still readable


def test_health_statistics_are_exact(settings) -> None:
    from llmfti.feedback import FeedbackRecord, feedback_to_table
    from llmfti.inference_log import InferenceRecord
    from llmfti.llm.backends.extractive import NO_ANSWER
    from pipelines.drain_logs import open_feedback_table
    from pipelines.monitor import run_monitor

    totals = [10.0 * (i + 1) for i in range(10)]
    logged = []
    for i, total in enumerate(totals):
        logged.append(InferenceRecord(
            request_id=f"req-{i}", created_at=H0 + timedelta(minutes=i), endpoint="/v1/chat/completions",
            model_id="m", model_version="m-1" if i < 5 else "m-2", prompt_id="rag@abc", index_name="docs",
            index_version=3, query=f"q{i}", answer=[NO_ANSWER, "see [1] and [2] and [1]", "plain"][i % 3],
            timings_ms={"retrieval": float(i), "generation": 2.0 * i}, total_ms=total, fallback=i < 2,
            degraded=["redis"] if i == 9 else [], error="boom" if i == 0 else None, status=500 if i == 0 else 200))
    write_log(settings, logged)
    open_feedback_table(settings).add(feedback_to_table([
        FeedbackRecord(feedback_id=f"fb-{i}", request_id=f"req-{i}", created_at=H0, rating=r)
        for i, r in ((1, -1), (2, 1), (3, -1), (3, 1))]))
    row = run_monitor(settings, window="1h").rows[0]
    assert row["requests"] == 10 and row["error_rate"] == 0.1
    assert row["fallback_rate"] == 0.2 and row["degraded_rate"] == 0.1
    ok = range(1, 10)  # request 0 failed: answers of the others
    assert row["no_answer_rate"] == pytest.approx(sum(1 for i in ok if i % 3 == 0) / 9)
    assert row["citations_per_answer"] == pytest.approx(sum(2 for i in ok if i % 3 == 1) / 9)
    assert row["latency_total_p95_ms"] == pytest.approx(np.percentile(totals, 95))
    assert json.loads(row["latency_stages_ms"])["generation"]["p50"] == pytest.approx(np.percentile(
        [2.0 * i for i in range(10)], 50))
    assert row["feedback_count"] == 4 and row["feedback_rate"] == 0.3 and row["negative_feedback_share"] == 0.5
    assert row["model_versions"] == ["m-1", "m-2"] and row["index_versions"] == ["docs@3"]
    assert row["prompt_ids"] == ["rag@abc"]
    assert row["embedding_drift_p"] is None  # below monitoring.min_requests: no drift test
    assert set(row["alerts"]) == {"error_rate"}  # 10% > 5%; the rest are within their thresholds


def test_cli_lists_alerts_as_json_and_exits_non_zero_only_when_one_fires(indexed) -> None:
    from typer.testing import CliRunner

    from llmfti.cli.main import app

    settings, index = indexed
    rng = random.Random(3)
    write_log(settings, records(rng, start=H0, count=60, shifted=False, index_name=index[0], index_version=index[1]))
    runner = CliRunner()
    quiet = runner.invoke(app, ["monitor", "--json", "--window", "1h"])
    assert quiet.exit_code == 0, quiet.output
    assert json.loads(quiet.stdout)["fired"] == 0

    write_log(settings, records(rng, start=H0 + timedelta(hours=1), count=60, shifted=True, index_name=index[0],
                                index_version=index[1]))
    loud = runner.invoke(app, ["monitor", "--json", "--window", "1h"])
    assert loud.exit_code == 3, loud.output
    payload = json.loads(loud.stdout)
    names = {a["name"] for a in payload["alerts"]}
    assert "query_embedding_drift" in names and "out_of_coverage" in names
    assert payload["thresholds"]["drift_p_value"] == settings.monitoring.drift_p_value

    bad = runner.invoke(app, ["monitor", "--json", "--window", "5m"])
    assert bad.exit_code == 1 and "--window 1h" in json.loads(bad.stdout)["error"]["message"]


def test_drift_statistics_separate_same_from_shifted_distributions() -> None:
    from llmfti.monitoring.drift import ks_test, mmd_test, psi

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(80, 8)), rng.normal(size=(80, 8))
    assert mmd_test(a, b, permutations=200).p_value > 0.05
    assert mmd_test(a, b + 0.8, permutations=200).p_value < 0.01
    x = rng.normal(size=500)
    assert ks_test(x, rng.normal(size=500)).p_value > 0.01 and ks_test(x, x + 0.5).p_value < 1e-6
    assert psi(x, rng.normal(size=500), kind="numeric") < 0.1 < 0.25 < psi(x, x + 1.0, kind="numeric")
    same = ["free"] * 50 + ["pro"] * 50
    assert psi(same, same, kind="categorical") == 0.0
    assert psi(same, ["team"] * 100, kind="categorical") > 0.25
    assert psi([["a", "b"]] * 10, [["c"]] * 10, kind="multi") > 0.25
    with pytest.raises(ValueError, match="kind"):
        psi(same, same, kind="ordinal")


def test_user_features_drift_against_the_served_models_training_dataset(settings, tmp_path) -> None:
    from llmfti.features.training_data import TrainingDataset
    from pipelines.monitor import run_monitor
    from tests.agent_support import add_user_features

    trained_on = [{"user_id": f"t-{i}", "event_time": H0 - timedelta(days=2), "plan": "team",
                   "language": "de", "events_30d": 100 + i} for i in range(60)]
    add_user_features(settings, trained_on)
    spine = [{"user_id": r["user_id"], "ts": H0 - timedelta(days=1)} for r in trained_on]
    TrainingDataset.create(settings, "users_train", spine, ["user_profile"])
    mv = _register_model(settings, tmp_path, "users_train")

    rng = random.Random(5)
    served = records(rng, start=H0, count=60, shifted=False, index_name="none", index_version=1)
    for record in served:  # the shifted-population generator's opposite: free/pro, mostly English
        record.model_version = f"{mv.ref}@abc123"
    write_log(settings, served)
    try:
        row = run_monitor(settings, window="1h").rows[0]
    finally:
        from llmfti.features.embedded_redis import shutdown_embedded

        shutdown_embedded(settings, save=False)
    assert row["user_feature_reference"] == f"training_dataset:users_train ({mv.ref})"
    psi = json.loads(row["user_feature_psi"])
    assert psi["plan"] > 0.25 and psi["language"] > 0.25 and psi["events_30d"] > 0.25
    assert "last_active" not in psi  # timestamps are not compared
    assert "user_feature_drift:plan" in row["alerts"]


def _register_model(settings, folder: Path, dataset: str, **lineage):
    """A registered version (tiny untrained LoRA) whose lineage names ``dataset``."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from llmfti.llm.tokenization import load_tokenizer
    from llmfti.registry import ModelRegistry
    from tests.tiny_llm import build_llama, build_tokenizer

    tokenizer = load_tokenizer(build_tokenizer(folder / "tok"))
    base = build_llama(folder / "base", vocab_size=len(tokenizer.tokenizer))
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(str(base)),
                           LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM"))
    model.save_pretrained(str(folder / "adapter"))
    return ModelRegistry(settings).register(adapter_dir=folder / "adapter", tokenizer=tokenizer, base_model=str(base),
                                            training_dataset_id=dataset, **lineage)


def test_query_drift_against_the_questions_the_served_model_was_trained_on(indexed, tmp_path) -> None:
    from benchmarks.monitoring import question
    from llmfti.features.feature_group import FeatureGroup
    from llmfti.features.training_data import TrainingDataset
    from pipelines.instruction_dataset import instruction_group_spec
    from pipelines.monitor import run_monitor, window_id

    settings, index = indexed
    rng = random.Random(11)
    examples = FeatureGroup.create(settings, instruction_group_spec("qa"))
    examples.write([{"example_id": f"ex-{i}", "event_time": H0 - timedelta(days=3), "question": question(rng, False),
                     "context": "c", "doc_id": "d", "passages": "[]", "answer": "a", "source": "synthetic"}
                    for i in range(200)])
    TrainingDataset.create(settings, "qa_train", [{"example_id": f"ex-{i}", "ts": H0 - timedelta(days=2)}
                                                  for i in range(200)], ["qa"])
    mv = _register_model(settings, tmp_path, "qa_train", index_name=index[0], index_version=index[1])
    served = [*records(rng, start=H0, count=150, shifted=False, index_name=index[0], index_version=index[1]),
              *records(rng, start=H0 + timedelta(hours=1), count=150, shifted=True, index_name=index[0],
                       index_version=index[1])]
    for record in served:
        record.model_version = mv.ref
    write_log(settings, served)

    result = run_monitor(settings, window="1h", reference="training")
    rows = {r["window_id"]: r for r in result.rows}
    on_topic, shifted = rows[window_id("1h", H0)], rows[window_id("1h", H0 + timedelta(hours=1))]
    assert result.reference == on_topic["reference"] == f"training_dataset:qa_train ({mv.ref})"
    assert on_topic["embedding_drift_p"] > settings.monitoring.drift_p_value > shifted["embedding_drift_p"]
    assert "query_embedding_drift" not in on_topic["alerts"] and "out_of_coverage" not in on_topic["alerts"]
    assert {"query_embedding_drift", "top_score_drift", "out_of_coverage"} <= set(shifted["alerts"])
