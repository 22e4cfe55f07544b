"""`llmfti dataset build` from feedback (served requests rated good) and from indexed documents via
templates; the frozen TrainingDataset stays the same when more feedback arrives."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from tests.agent_support import agent_settings, data_dir_with_index

MODEL = "llmfti-extractive"
DEFAULT = {"Authorization": "Bearer key-default"}
ACME = {"Authorization": "Bearer key-acme"}
GLOBEX = {"Authorization": "Bearer key-globex"}


def ask(client, question: str, headers=DEFAULT) -> tuple[str, dict]:
    r = client.post("/v1/chat/completions", headers=headers,
                    json={"model": MODEL, "messages": [{"role": "system", "content": "be brief"},
                                                       {"role": "user", "content": question}]})
    assert r.status_code == 200, r.text
    return r.headers["x-request-id"], r.json()


def rate(client, request_id: str, rating: int, headers=DEFAULT, **extra) -> None:
    r = client.post("/v1/feedback", headers=headers, json={"request_id": request_id, "rating": rating, **extra})
    assert r.status_code == 200, r.text


def drain(app, settings) -> None:
    from pipelines.drain_logs import drain_logs

    app.state.agent.pipeline.log_writer.flush()
    app.state.agent.feedback.writer.flush()
    drain_logs(settings)


def test_feedback_dataset_uses_latest_positive_ratings_and_corrections_and_stays_frozen(tmp_path):
    from agents.api.app import create_app
    from llmfti.features.training_data import TrainingDataset
    from pipelines.instruction_dataset import build_instruction_dataset, training_dataset_rows

    settings = agent_settings(data_dir_with_index(tmp_path / "data"))
    app = create_app(settings)
    with TestClient(app) as client:
        good, good_body = ask(client, "How do I roll back the index version?")
        fixed, _ = ask(client, "Which port does the agent listen on?")
        bad, _ = ask(client, "What is served?")
        flipped_down, _ = ask(client, "Are old versions searchable?")
        flipped_up, _ = ask(client, "How are chat requests answered?")
        acme, _ = ask(client, "When do Acme launches happen?", ACME)
        rate(client, good, 1)
        rate(client, fixed, 1, correction="Port 8000 [1].")
        rate(client, bad, -1, correction="A negative rating never trains, even with a correction.")
        rate(client, flipped_down, 1)
        rate(client, flipped_down, -1)
        rate(client, flipped_up, 0)
        rate(client, flipped_up, 1)
        # The API refuses feedback on unknown requests and on other tenants' requests (404) ...
        for request_id, headers in (("req-does-not-exist", DEFAULT), (acme, GLOBEX)):
            refused = client.post("/v1/feedback", headers=headers, json={"request_id": request_id, "rating": 1})
            assert refused.status_code == 404, refused.text
        # ... and the dataset builder distrusts such records anyway (written past the API, e.g. by an
        # older agent or another writer of the stream): defence in depth.
        from llmfti.feedback import FeedbackRecord, new_feedback_id
        from llmfti.inference_log import now_utc

        writer = app.state.agent.feedback.writer
        for request_id, tenant in (("req-does-not-exist", None), (acme, "globex")):
            writer.submit(FeedbackRecord(feedback_id=new_feedback_id(), request_id=request_id, created_at=now_utc(),
                                         rating=1, api_key_name="past-the-api", tenant=tenant))
        drain(app, settings)

        default_only = build_instruction_dataset(settings, feedback=True, dataset="fb_default")
        assert f"feedback:{acme}" not in {r["example_id"] for r in default_only["rejected_sample"]}
        summary = build_instruction_dataset(settings, feedback=True, tenant="*", dataset="fb_v1")
        assert summary["group"] == "instructions" and summary["num_rows"] == 3
        reasons = {r["example_id"]: r["reason"] for r in summary["rejected_sample"]}
        assert "unknown request id" in reasons["feedback:req-does-not-exist"]
        assert "tenant 'globex'" in reasons[f"feedback:{acme}"]
        assert "latest rating is -1" in reasons[f"feedback:{bad}"]
        assert "latest rating is -1" in reasons[f"feedback:{flipped_down}"]
        assert summary["sources"]["feedback"]["positive"] == 5

        from llmfti.features.feature_group import FeatureGroup

        table = FeatureGroup.open(settings, "instructions").read()
        rows = {r["example_id"]: r for r in table.to_pylist()}
        assert set(rows) == {f"feedback:{good}", f"feedback:{fixed}", f"feedback:{flipped_up}"}
        assert rows[f"feedback:{fixed}"]["answer"] == "Port 8000 [1]."
        assert rows[f"feedback:{fixed}"]["source"] == "feedback:correction"
        first = rows[f"feedback:{good}"]
        assert first["answer"] == good_body["choices"][0]["message"]["content"]
        assert first["source"] == "feedback:answer"
        assert first["question"] == "How do I roll back the index version?"  # the last user message
        passages = json.loads(first["passages"])
        assert [p["chunk_id"] for p in passages] == [c["chunk_id"] for c in good_body["citations"]]
        assert "llmfti index rollback" in first["context"]
        assert first["event_time"] is not None and first["ingested_at"] >= first["event_time"]

        frozen, lineage = training_dataset_rows(settings, "fb_v1")
        assert len(frozen) == 3 and lineage["feature_groups"] == {"instructions@v2": summary["data_version"]}
        trained = next(r for r in frozen if r["answer"] == "Port 8000 [1].")
        assert trained["messages"][-1]["content"] == "Which port does the agent listen on?"
        assert "[1] (" in trained["messages"][0]["content"] and "port 8000" in trained["messages"][0]["content"]

        # more feedback arrives: a correction on a rated request, and a new positive rating
        rate(client, good, 1, correction="Run llmfti index rollback [1].")
        rate(client, bad, 1)
        drain(app, settings)
        later = build_instruction_dataset(settings, feedback=True, tenant="*", dataset="fb_v2")
        assert later["num_rows"] == 4 and later["data_version"] > summary["data_version"]
        newer = {r["answer"] for r in training_dataset_rows(settings, "fb_v2")[0]}
        assert "Run llmfti index rollback [1]." in newer

    assert training_dataset_rows(settings, "fb_v1")[0] == frozen  # the frozen dataset did not move
    assert TrainingDataset.load(settings, "fb_v1").spec.rows_sha256 == summary["rows_sha256"]


def test_document_templates_make_grounded_examples_from_the_index(tmp_path):
    from llmfti.config import load_settings
    from llmfti.errors import InvalidInputError
    from llmfti.features.feature_group import FeatureGroup
    from llmfti.index import VectorIndex
    from pipelines.instruction_dataset import build_instruction_dataset, training_dataset_rows

    settings = load_settings(data_dir=data_dir_with_index(tmp_path / "data"))
    version = VectorIndex.open(settings).version
    summary = build_instruction_dataset(settings, templates=["about", "continue"], tenant="acme", dataset="docs")
    assert summary["sources"]["documents"]["index_version"] == version
    rows = {r["example_id"]: r for r in FeatureGroup.open(settings, "instructions").read().to_pylist()}
    about = next(r for r in rows.values() if r["example_id"].startswith("doc:about:"))
    cont = next(r for r in rows.values() if r["example_id"].startswith("doc:continue:"))
    assert about["question"] == "What does the documentation say about Acme rockets?"
    assert about["answer"] == ("The Acme rocket engine burns liquid oxygen and kerosene. "
                               "Acme launches happen every Tuesday. [1]")
    assert cont["question"] == ('Continue this passage from "Acme rockets": '
                                '"The Acme rocket engine burns liquid oxygen and kerosene."')
    assert cont["answer"] == "Acme launches happen every Tuesday."
    assert about["source"] == f"documents:{settings.index.name}@v{version}:about"
    assert all(r["doc_id"].endswith("acme.md") for r in rows.values())  # only the tenant's chunks
    assert about["event_time"] is not None
    assert summary["num_rows"] == len(rows) == 2

    frozen, _ = training_dataset_rows(settings, "docs")
    assert {r["answer"] for r in frozen} == {about["answer"], cont["answer"]}
    assert all(f"[1] ({about['doc_id']})" in r["messages"][0]["content"] for r in frozen)

    public = build_instruction_dataset(settings, templates=["about"], dataset="docs_default")
    assert public["sources"]["documents"]["chunks"] == 2  # the default tenant's two documents
    everything = build_instruction_dataset(settings, templates=["about"], tenant="*", dataset="docs_all")
    assert everything["num_rows"] == VectorIndex.open(settings).count_rows() == 4
    with pytest.raises(InvalidInputError, match="unknown document templates"):
        build_instruction_dataset(settings, templates=["poem"])
    with pytest.raises(InvalidInputError, match="no source"):
        build_instruction_dataset(settings)


def test_cli_builds_from_documents_and_reports_json(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    data_dir = data_dir_with_index(tmp_path / "data")
    env = {**os.environ, "LLMFTI_DATA_DIR": str(data_dir)}
    exe = Path(sys.executable).parent / "llmfti"
    out = subprocess.run([str(exe), "dataset", "build", "--template", "continue", "--name", "cli_docs", "--json"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["training_dataset"] == "cli_docs" and summary["num_rows"] == 2
    assert summary["sources"]["documents"]["templates"] == ["continue"]
    out = subprocess.run([str(exe), "dataset", "build", "--json"], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode != 0 and "no source to build from" in json.loads(out.stdout)["error"]["message"]
