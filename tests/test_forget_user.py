"""Forgetting a user: no LanceDB table version reachable afterwards (nor any file on disk) holds the
user, the online store forgets them, other users are untouched, datasets that held them refuse to
recreate, tags pinning their rows are removed, and the audit row names no erased value."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.agent_support import add_user_features

GONE, KEPT = "u-erase-me-7f3a", "u-keep-me-91c2"
T0 = datetime(2026, 11, 1, tzinfo=UTC)


@pytest.fixture
def populated(settings):
    from llmfti.features.embedded_redis import shutdown_embedded
    from llmfti.features.feature_group import FeatureGroup
    from llmfti.features.training_data import TrainingDataset
    from llmfti.feedback import FeedbackRecord, feedback_to_table
    from llmfti.inference_log import InferenceRecord, records_to_table
    from pipelines.drain_logs import open_feedback_table, open_log_table
    from pipelines.instruction_dataset import instruction_group_spec

    for day in range(2):  # two writes: the user's rows live in several Lance versions
        add_user_features(settings, [
            {"user_id": user, "event_time": T0 + timedelta(days=day), "plan": plan, "events_30d": 3 + day}
            for user, plan in ((GONE, "team"), (KEPT, "pro"))])
    logs = open_log_table(settings)
    # one fragment of 44 rows where the user's 2 are under 10%: the share below which Lance's default
    # compaction leaves deleted rows in the data files
    users = [GONE, KEPT, GONE, KEPT] + [f"u-other-{i}" for i in range(40)]
    logs.add(records_to_table([InferenceRecord(
        request_id=f"req-{i}", created_at=T0 + timedelta(hours=i), endpoint="/v1/chat/completions",
        model_id="m", model_version="m-1", prompt_id="p@1", user_id=user, query=f"question {i} of {user}",
        user_features={"user_id": user, "plan": "team"}, answer="an answer [1]") for i, user in enumerate(users)]))
    logs.tags.create("audit-2026-11", logs.version)  # a tag pinning a version that holds the user
    open_feedback_table(settings).add(feedback_to_table([
        FeedbackRecord(feedback_id=f"fb-{i}", request_id=f"req-{i}", created_at=T0, rating=1, user_id=None,
                       correction=f"better answer {i}") for i in range(4)]))
    examples = FeatureGroup.create(settings, instruction_group_spec("instructions"))
    examples.write([{"example_id": f"feedback:req-{i}", "event_time": T0, "question": f"question {i}",
                     "context": "ctx", "doc_id": "d", "passages": "[]", "answer": f"better answer {i}",
                     "source": "feedback:answer"} for i in range(4)])
    spine = [{"user_id": u, "ts": T0 + timedelta(days=3)} for u in (GONE, KEPT)]
    TrainingDataset.create(settings, "users_ds", spine, ["user_profile"])
    TrainingDataset.create(settings, "kept_only_ds", [{"user_id": KEPT, "ts": T0 + timedelta(days=3)}],
                           ["user_profile"])
    yield settings
    shutdown_embedded(settings, save=False)


def _files_holding(root: Path, needle: str) -> list[Path]:
    data = needle.encode()
    return [p for p in root.rglob("*") if p.is_file() and data in p.read_bytes()]


def _versions_holding(settings, user: str, request_ids: list[str]) -> list[str]:
    from llmfti.lance import connect, escape_literal, table_names

    db = connect(settings)
    found = []
    for name in table_names(db):
        table = db.open_table(name)
        for version in [int(v["version"]) for v in table.list_versions()]:
            old = db.open_table(name, version=version)
            names = old.schema.names
            clauses = [f"user_id = {escape_literal(user)}"] if "user_id" in names else []
            if "request_id" in names:
                clauses.append("request_id IN (" + ", ".join(escape_literal(r) for r in request_ids) + ")")
            if "example_id" in names:
                clauses.append("example_id IN (" + ", ".join(escape_literal("feedback:" + r)
                                                             for r in request_ids) + ")")
            if clauses and old.count_rows(" OR ".join(f"({c})" for c in clauses)):
                found.append(f"{name}@v{version}")
    return found


def test_forget_erases_every_reachable_version_and_keeps_others(populated) -> None:
    from llmfti.errors import NotReproducibleError
    from llmfti.features.erasures import erasures, subject_digest
    from llmfti.features.online_store import OnlineStore
    from llmfti.features.training_data import TrainingDataset
    from pipelines.drain_logs import open_feedback_table, open_log_table
    from pipelines.forget_user import forget_user

    settings = populated
    lancedb_dir = Path(settings.data_dir) / "lancedb"
    erased_requests = ["req-0", "req-2"]
    before = _versions_holding(settings, GONE, erased_requests)
    assert any(v.startswith("fg_user_profile_v1@") for v in before) and any("inference_log@" in v for v in before)
    assert _files_holding(lancedb_dir, GONE), "sanity: the user's id is in files before the erasure"
    store = OnlineStore.from_settings(settings)
    assert not store.get("user_profile", GONE).missing

    record = forget_user(settings, GONE, requested_by="dpo@example.com", reason="ticket 42")

    assert _versions_holding(settings, GONE, erased_requests) == []
    assert _files_holding(lancedb_dir, GONE) == []  # old versions and deleted rows are physically gone
    assert store.get("user_profile", GONE).missing
    assert not store.get("user_profile", KEPT).missing
    assert open_log_table(settings).count_rows(f"user_id = '{KEPT}'") == 2
    assert sorted(open_feedback_table(settings).to_arrow().column("request_id").to_pylist()) == ["req-1", "req-3"]
    assert record.tables["inference_log"]["rows_deleted"] == 2
    assert record.tables["feedback"]["rows_deleted"] == 2
    assert record.tables["fg_instructions_v2"]["rows_deleted"] == 2
    assert record.tables["fg_user_profile_v1"]["rows_deleted"] == 2
    assert record.online_keys_deleted == 1
    assert record.tags_removed == ["inference_log:audit-2026-11"]
    # the dataset whose spine named the user, and the one pinning a removed version, refuse to recreate
    assert record.datasets_unrecreatable == ["kept_only_ds", "users_ds"]
    with pytest.raises(NotReproducibleError, match="erasure"):
        TrainingDataset.load(settings, "users_ds").read()

    audit = erasures(settings)
    assert len(audit) == 1 and audit[0]["requested_by"] == "dpo@example.com"
    assert audit[0]["subject_sha256"] == subject_digest(GONE, None)
    assert GONE not in json.dumps(audit, default=str)  # never the erased values
    assert "better answer 0" not in json.dumps(audit, default=str)


def test_forget_within_a_tenant_keeps_the_same_id_in_another_tenant(settings) -> None:
    from llmfti.inference_log import InferenceRecord, records_to_table
    from pipelines.drain_logs import open_log_table
    from pipelines.forget_user import forget_user

    logs = open_log_table(settings)
    logs.add(records_to_table([InferenceRecord(
        request_id=f"req-{tenant}", created_at=T0, endpoint="/v1/chat/completions", model_id="m",
        model_version="m-1", prompt_id="p@1", tenant=tenant, user_id="u-same") for tenant in ("acme", "globex")]))
    record = forget_user(settings, "u-same", tenant="acme", drain=False)
    assert record.tables["inference_log"]["rows_deleted"] == 1
    left = open_log_table(settings).to_arrow().to_pylist()
    assert [(r["tenant"], r["user_id"]) for r in left] == [("globex", "u-same")]


def test_forget_refuses_an_empty_user_id(settings) -> None:
    from llmfti.errors import InvalidInputError
    from pipelines.forget_user import forget_user

    with pytest.raises(InvalidInputError, match="empty"):
        forget_user(settings, "  ", drain=False)


def test_cli_forget_reports_counts_as_json_and_lists_the_audit(settings) -> None:
    from typer.testing import CliRunner

    from llmfti.cli.main import app
    from llmfti.features.embedded_redis import shutdown_embedded
    from llmfti.inference_log import InferenceRecord, records_to_table
    from pipelines.drain_logs import open_log_table

    open_log_table(settings).add(records_to_table([InferenceRecord(
        request_id=f"req-{i}", created_at=T0, endpoint="/v1/chat/completions", model_id="m", model_version="m-1",
        prompt_id="p@1", user_id=user) for i, user in enumerate((GONE, KEPT, GONE))]))
    runner = CliRunner()
    try:
        result = runner.invoke(app, ["users", "forget", GONE, "--by", "dpo", "--reason", "ticket 7", "--json"])
        listed = runner.invoke(app, ["users", "erasures", "--json"])
    finally:
        shutdown_embedded(settings, save=False)
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["tables"]["inference_log"]["rows_deleted"] == 2 and payload["requested_by"] == "dpo"
    assert GONE not in result.stdout
    audit = json.loads(listed.stdout)["erasures"]
    assert [e["erasure_id"] for e in audit] == [payload["erasure_id"]] and audit[0]["reason"] == "ticket 7"
    empty = runner.invoke(app, ["users", "forget", " ", "--json"])
    assert empty.exit_code == 1 and "empty" in json.loads(empty.stdout)["error"]["message"]
