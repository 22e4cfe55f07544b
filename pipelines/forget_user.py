"""Forgetting a user: erase every row about them, online and offline, including old Lance versions.

    from pipelines.forget_user import forget_user
    forget_user(settings, "u-42", tenant=None, requested_by="dpo@example.com", reason="GDPR art. 17")

What is erased (``tenant`` given: only rows of that tenant where a table has a ``tenant`` column;
feature groups without one are keyed by user id alone, so their rows are erased whatever the tenant):

1. pending log records first: the inference-log and feedback streams and spool files are drained
   into LanceDB (so nothing about the user is left in Redis or a spool file to arrive later); if
   Redis cannot be drained nothing is erased and the command fails;
2. every LanceDB table with a ``user_id`` column (feature groups, ``inference_log``, ``feedback``,
   any other), rows ``user_id = USER``;
3. feedback on the user's requests and instruction examples built from them (``feedback:<request id>``
   in any feature group keyed by ``example_id``);
4. quarantine and dead-letter rows whose raw text holds the user id as a JSON string;
5. the online store: the user's hash in every schema version of every group keyed by ``user_id``;
6. frozen training datasets: spine rows naming the user or an erased example are deleted too. A
   dataset whose spine held them, or that pins a version removed in step 7, is **marked as no longer
   recreatable** in the audit table (``TrainingDataset.read`` refuses it with the erasure as the
   reason; rebuild it under a new name from the current data);
7. old versions: each touched table's deletions are materialised by compaction (every fragment
   holding a deleted row is rewritten) and every older version is removed. **Tags pin versions**:
   a tag on a version that still holds the user is deleted (erasure outranks reproducibility) and
   listed in the audit row; tags on versions without the user are kept, and so are their versions.

Time travel therefore ends at the erasure for the touched tables: their version history before it is
gone (the monitoring group and index tables are untouched). Every erasure is recorded in the
``erasures`` audit table (who, when, which tables and counts; the subject only as a SHA-256).
"""

from __future__ import annotations

import getpass
import json
import uuid
import warnings
from datetime import timedelta
from typing import Any

from llmfti.config import Settings
from llmfti.errors import InvalidInputError, StoreUnavailableError
from llmfti.features.erasures import AUDIT_TABLE, ErasureRecord, record_erasure, subject_digest
from llmfti.features.timestamps import utc_now
from llmfti.lance import connect, escape_literal, table_names

_IN_MAX = 1000  # values per SQL IN (...) clause
_RAW_COLUMNS = ("row_json", "raw")  # quarantine / dead-letter payloads


def forget_user(settings: Settings, user_id: str, *, tenant: str | None = None, requested_by: str | None = None,
                reason: str = "", drain: bool = True) -> ErasureRecord:
    """Erase ``user_id`` (optionally only within ``tenant``) everywhere; returns the audit record."""
    if not isinstance(user_id, str) or not user_id.strip():
        raise InvalidInputError("the user id is empty", expected="the id the agent logged (x-user-id)",
                                fix="pass the user id to forget")
    record = ErasureRecord(erasure_id=f"erasure-{uuid.uuid4().hex}", subject_sha256=subject_digest(user_id, tenant),
                           tenant=tenant, requested_by=requested_by or _whoami(), at=utc_now(), reason=reason)
    if drain:
        _drain_pending(settings)
    db = connect(settings)
    names = [n for n in table_names(db) if n != AUDIT_TABLE]
    request_ids = _request_ids(settings, db, names, user_id, tenant)
    deleted: dict[str, int] = {}
    for name in names:
        count = _erase_from_table(db.open_table(name), user_id, tenant, request_ids)
        if count:
            deleted[name] = count
    record.online_keys_deleted = _erase_online(settings, user_id, tenant)
    record.datasets_unrecreatable = _erase_from_spines(settings, db, user_id, request_ids, deleted)
    for name, count in sorted(deleted.items()):
        versions, tags = _purge_old_versions(db.open_table(name), user_id, request_ids)
        record.tables[name] = {"rows_deleted": count, "versions_removed": versions}
        record.tags_removed += [f"{name}:{t}" for t in tags]
    lost = _datasets_losing_versions(settings, db, set(deleted))
    record.datasets_unrecreatable = sorted(set(record.datasets_unrecreatable) | set(lost))
    record_erasure(settings, record)
    return record


def _whoami() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _drain_pending(settings: Settings) -> None:
    from pipelines.drain_logs import drain_logs

    result = drain_logs(settings)
    errors = [e for e in (result.get("stream_error"), result.get("feedback", {}).get("stream_error")) if e]
    if errors:
        raise StoreUnavailableError(
            f"could not drain the log streams before erasing: {errors[0]}",
            expected="a reachable Redis, so no record of the user is left in a stream",
            fix="start Redis (or fix redis.url) and run the command again; nothing was erased",
        )


def _in_list(column: str, values: list[str]) -> list[str]:
    return [f"`{column}` IN ({', '.join(escape_literal(v) for v in values[i:i + _IN_MAX])})"
            for i in range(0, len(values), _IN_MAX)]


def _user_filter(schema: Any, user_id: str, tenant: str | None) -> str | None:
    if "user_id" not in schema.names:
        return None
    where = f"user_id = {escape_literal(user_id)}"
    if tenant is not None and "tenant" in schema.names:
        where += f" AND tenant = {escape_literal(tenant)}"
    return where


def _request_ids(settings: Settings, db: Any, names: list[str], user_id: str, tenant: str | None) -> list[str]:
    """Request ids of the user's logged requests (their feedback and examples go too)."""
    name = settings.agent.log_table
    if name not in names:
        return []
    table = db.open_table(name)
    where = _user_filter(table.schema, user_id, tenant)
    rows = table.search().where(where).select(["request_id"]).limit(None).to_arrow()
    return sorted(set(rows.column("request_id").to_pylist()))


def _erase_from_table(table: Any, user_id: str, tenant: str | None, request_ids: list[str]) -> int:
    schema = table.schema
    clauses = []
    user_where = _user_filter(schema, user_id, tenant)
    if user_where:
        clauses.append(user_where)
    if request_ids and "request_id" in schema.names and "rating" in schema.names:  # feedback on their requests
        clauses += _in_list("request_id", request_ids)
    if request_ids and "example_id" in schema.names:  # instruction examples built from their feedback
        clauses += _in_list("example_id", [f"feedback:{r}" for r in request_ids])
    raw = [c for c in _RAW_COLUMNS if c in schema.names]
    if raw:
        ids = _raw_matches(table, raw[0], user_id)
        if ids:
            clauses.append(ids)
    if not clauses:
        return 0
    where = " OR ".join(f"({c})" for c in clauses)
    before = table.count_rows()
    matching = table.count_rows(where)
    if matching:
        table.delete(where)
    return int(min(matching, before))


def _raw_matches(table: Any, column: str, user_id: str) -> str | None:
    """A filter selecting rows whose raw payload holds the user id as a JSON string."""
    needle = json.dumps(user_id).encode()
    rows = table.to_arrow()
    keys = [c for c in ("dead_letter_id", "write_id") if c in rows.column_names]
    if not keys:
        return None
    hits = []
    for i, value in enumerate(rows.column(column).to_pylist()):
        data = value if isinstance(value, bytes) else str(value or "").encode()
        if needle in data:
            hits.append(i)
    if not hits:
        return None
    if keys[0] == "dead_letter_id":
        return " OR ".join(_in_list("dead_letter_id", [rows.column("dead_letter_id")[i].as_py() for i in hits]))
    pairs = [(rows.column("write_id")[i].as_py(), rows.column("row_index")[i].as_py()) for i in hits]
    return " OR ".join(f"(write_id = {escape_literal(w)} AND row_index = {int(r)})" for w, r in pairs)


def _erase_online(settings: Settings, user_id: str, tenant: str | None) -> int:
    """Delete the user's hash from every schema version of every group keyed by user_id."""
    from llmfti.features.feature_group import FeatureGroup
    from llmfti.features.online_store import OnlineStore

    specs = [s for s in FeatureGroup.list(settings) if s.key == "user_id"]
    if not specs:
        return 0
    store = OnlineStore.from_settings(settings)
    tenants = [tenant] if tenant is not None else _tenants(settings)
    deleted = 0
    for spec in specs:
        deleted += store.delete_vectors(spec, [user_id] * len(tenants), tenants)
    return deleted


def _tenants(settings: Settings) -> list[str | None]:
    """Every tenant a user's online hash could live under (default, and any seen in a tenant column)."""
    from llmfti.features.feature_group import FeatureGroup

    seen: set[str | None] = {None}
    for spec in FeatureGroup.list(settings):
        if "tenant" in spec.feature_names:
            seen |= set(FeatureGroup.open(settings, spec.name, spec.version).read(columns=["tenant"])
                        .column("tenant").to_pylist())
    return sorted(seen, key=lambda t: t or "")


def _erase_from_spines(settings: Settings, db: Any, user_id: str, request_ids: list[str],
                       deleted: dict[str, int]) -> list[str]:
    """Delete erased keys from training-dataset spines; names of the datasets whose spine held them."""
    from llmfti.features.training_data import TrainingDataset

    erased_keys = [user_id] + [f"feedback:{r}" for r in request_ids]
    affected = []
    for name in TrainingDataset.names(settings):
        spec = TrainingDataset.load(settings, name).spec
        if spec.spine_table is None or spec.spine_table not in table_names(db):
            continue
        spine = db.open_table(spec.spine_table)
        clauses = [c for join in spec.joins if join.key_column in spine.schema.names
                   for c in _in_list(join.key_column, erased_keys)]
        where = " OR ".join(f"({c})" for c in clauses)
        count = spine.count_rows(where) if clauses else 0
        if count:
            spine.delete(where)
            deleted[spec.spine_table] = deleted.get(spec.spine_table, 0) + count
            affected.append(name)
    return affected


def _datasets_losing_versions(settings: Settings, db: Any, purged: set[str]) -> list[str]:
    """Datasets pinning a version of a purged table that no longer exists (they cannot be recreated)."""
    from llmfti.features.training_data import TrainingDataset

    kept = {name: {int(v["version"]) for v in db.open_table(name).list_versions()} for name in purged}
    out = []
    for name in TrainingDataset.names(settings):
        spec = TrainingDataset.load(settings, name).spec
        pins = [(f"fg_{j.group}_v{j.version}", j.data_version) for j in spec.joins]
        if spec.spine_table:
            pins.append((spec.spine_table, spec.spine_data_version))
        if any(table in kept and version not in kept[table] for table, version in pins):
            out.append(name)
    return out


def _purge_old_versions(table: Any, user_id: str, request_ids: list[str]) -> tuple[int, list[str]]:
    """Untag versions still holding the user, materialise deletions, remove every older version."""
    removed_tags = []
    for tag, info in dict(table.tags.list()).items():
        version = info["version"] if isinstance(info, dict) else getattr(info, "version", info)
        if _version_holds(table, int(version), user_id, request_ids):
            table.tags.delete(tag)
            removed_tags.append(tag)
    before = len(table.list_versions())
    # pylance: rewrite every fragment with a deleted row (the default leaves those under 10% deleted)
    table.compact_files(materialize_deletions=True, materialize_deletions_threshold=0.0)
    with warnings.catch_warnings():  # removing every older version is the point here
        warnings.filterwarnings("ignore", message=r"optimize\(cleanup_older_than=0\)")
        table.optimize(cleanup_older_than=timedelta(0), delete_unverified=True)
    return max(0, before - len(table.list_versions())), removed_tags


def _version_holds(table: Any, version: int, user_id: str, request_ids: list[str]) -> bool:
    table.checkout(version)
    try:
        schema = table.schema
        clauses = [f"user_id = {escape_literal(user_id)}"] if "user_id" in schema.names else []
        if request_ids and "request_id" in schema.names:
            clauses += _in_list("request_id", request_ids)
        if request_ids and "example_id" in schema.names:
            clauses += _in_list("example_id", [f"feedback:{r}" for r in request_ids])
        return bool(clauses) and table.count_rows(" OR ".join(f"({c})" for c in clauses)) > 0
    finally:
        table.checkout_latest()


def table_holds(table: Any, user_id: str) -> bool:
    """Whether the current version of ``table`` has a row with ``user_id`` (for checks and tests)."""
    return "user_id" in table.schema.names and table.count_rows(f"user_id = {escape_literal(user_id)}") > 0
