"""Point-in-time-correct training data, and TrainingDataset: a frozen spec that recreates it.

``get_training_data(settings, spine, groups)`` joins, for every spine row (entity key, ``ts``,
labels...), the latest row of each feature group with ``event_time <= ts``: nothing from the
future of ``ts`` leaks in. With ``as_of`` (an ingestion time), each group is read as it was at
that moment: at the latest data version committed by then, and without rows ingested after it,
so late-arriving data (and later corrections by upsert) are excluded.

A :class:`TrainingDataset` records everything the rows depend on: the spine (stored as its own
Lance table and pinned by data version), each group's schema version and Lance data version,
the join rules (key column, features, max age) and the filters, plus the SHA-256 of the rows.
``read()`` recreates byte-identical rows however much data arrived since, or raises
:class:`NotReproducibleError`.

Output columns: the spine's, then per group ``<group>__<feature>`` and ``<group>__event_time``
(the event time of the joined row, null when no row qualified).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from llmfti.errors import InvalidInputError, NotFoundError, NotReproducibleError
from llmfti.features.feature_group import FeatureGroup
from llmfti.features.point_in_time import as_of_indices, take_or_null
from llmfti.features.spec import INGESTED_AT, arrow_type
from llmfti.features.timestamps import to_utc, utc_now
from llmfti.lance import connect, escape_literal, open_or_create_table, table_names
from llmfti.naming import check_name

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

    from llmfti.config import Settings

REGISTRY_TABLE = "training_datasets"
FilterOp = Literal["==", "!=", "<", "<=", ">", ">=", "in", "not_in", "is_null", "not_null"]


class JoinRule(BaseModel):
    """How one feature group joins the spine, pinned to a schema and a data version."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    group: str
    version: int
    data_version: int
    key_column: str = Field(description="Spine column holding the group's entity key.")
    features: list[str]
    max_age_s: int | None = Field(None, description="Ignore feature rows older than this at ts.")

    @property
    def prefix(self) -> str:
        return f"{self.group}__"


class RowFilter(BaseModel):
    """Keep only output rows where ``column op value`` holds (applied after the join)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    column: str
    op: FilterOp
    value: Any = None


class TrainingDatasetSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str | None = None
    ts_column: str = "ts"
    as_of: datetime | None = None
    joins: list[JoinRule]
    filters: list[RowFilter] = []
    spine_table: str | None = None
    spine_data_version: int | None = None
    num_rows: int | None = None
    rows_sha256: str | None = None
    created_at: datetime | None = None


def resolve_joins(
    settings: Settings,
    groups: Iterable[str | FeatureGroup | JoinRule],
    *,
    key_column: str | None = None,
    features: dict[str, list[str]] | None = None,
    as_of: datetime | None = None,
) -> list[JoinRule]:
    """Pin each group (a name, ``name@v2``, a FeatureGroup or a JoinRule) to its current data
    version (or the one current at ``as_of``)."""
    rules = []
    for group in groups:
        if isinstance(group, JoinRule):
            rules.append(group)
            continue
        if isinstance(group, str):
            name, _, version = group.partition("@v")
            group = FeatureGroup.open(settings, name, int(version) if version else None)
        spec = group.spec
        wanted = (features or {}).get(spec.name) or spec.feature_names
        for feature in wanted:
            spec.feature(feature)  # raises a clear error for an unknown name
        rules.append(
            JoinRule(
                group=spec.name,
                version=spec.version,
                data_version=group.data_version_at(as_of) if as_of else group.data_version,
                key_column=key_column or spec.key,
                features=list(wanted),
                max_age_s=spec.online_ttl_s,
            )
        )
    if not rules:
        raise InvalidInputError("no feature groups to join", fix="pass at least one group name")
    return rules


def normalise_spine(spine: Any, ts_column: str, key_columns: Sequence[str]) -> pa.Table:
    """The spine as an Arrow table whose ``ts_column`` is timestamp[us, UTC]."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not isinstance(spine, pa.Table):
        rows = list(spine)
        if not rows:
            raise InvalidInputError("the spine is empty", fix="pass at least one (key, ts) row")
        rows = [{**r, ts_column: to_utc(r[ts_column])} if r.get(ts_column) is not None else r for r in rows]
        spine = pa.Table.from_pylist(rows)
    for column in [ts_column, *key_columns]:
        if column not in spine.column_names:
            raise InvalidInputError(
                f"the spine has no column {column!r}",
                expected=f"columns {[ts_column, *key_columns]} (entity key(s) and the label timestamp)",
                fix="rename the spine columns or pass ts_column= / key_column=",
            )
    ts = spine.column(ts_column)
    if pa.types.is_string(ts.type) or pa.types.is_large_string(ts.type):
        ts = pa.array([None if v is None else to_utc(v) for v in ts.to_pylist()], type=arrow_type("timestamp"))
    elif pa.types.is_timestamp(ts.type):
        if ts.type.tz is None:
            ts = pc.assume_timezone(ts, "UTC")
        ts = ts.cast(arrow_type("timestamp"))
    else:
        raise InvalidInputError(
            f"spine column {ts_column!r} has type {ts.type}", expected="timestamps or ISO-8601 strings"
        )
    if ts.null_count:
        raise InvalidInputError(
            f"spine column {ts_column!r} has {ts.null_count} null timestamps", fix="drop those rows or give them a time"
        )
    return spine.set_column(spine.schema.get_field_index(ts_column), ts_column, ts)


def join_features(settings: Settings, spine: pa.Table, spec: TrainingDatasetSpec) -> pa.Table:
    """Execute ``spec`` on ``spine``: deterministic for the same spine and pinned versions."""
    import numpy as np
    import pyarrow as pa

    spine = normalise_spine(spine, spec.ts_column, [j.key_column for j in spec.joins])
    ts_us = np.asarray(spine.column(spec.ts_column).cast(pa.int64()).to_numpy(), dtype=np.int64)
    result = spine
    for rule in spec.joins:
        group = FeatureGroup.open(settings, rule.group, rule.version)
        key, event_time = group.spec.key, group.spec.event_time
        rows = group.read(
            data_version=rule.data_version,
            as_of=spec.as_of,
            columns=[key, event_time, INGESTED_AT, *rule.features],
        )
        indices = as_of_indices(
            spine.column(rule.key_column),
            ts_us,
            rows.column(key),
            _micros(rows.column(event_time)),
            _micros(rows.column(INGESTED_AT)),
            max_age_us=None if rule.max_age_s is None else rule.max_age_s * 1_000_000,
        )
        joined = take_or_null(rows.select([*rule.features, event_time]), indices)
        for name in [*rule.features, event_time]:
            column = f"{rule.prefix}{'event_time' if name == event_time else name}"
            if column in result.column_names:
                raise InvalidInputError(
                    f"output column {column!r} would appear twice",
                    fix="rename the spine column or join each group once",
                )
            result = result.append_column(column, joined.column(name))
    for row_filter in spec.filters:
        result = result.filter(_mask(result, row_filter))
    return result.combine_chunks()


def _micros(column: pa.ChunkedArray) -> np.ndarray:
    import numpy as np
    import pyarrow as pa

    return np.asarray(column.cast(pa.int64()).to_numpy(), dtype=np.int64)


def _mask(table: pa.Table, row_filter: RowFilter) -> pa.Array:
    import pyarrow as pa
    import pyarrow.compute as pc

    if row_filter.column not in table.column_names:
        raise InvalidInputError(
            f"filter on unknown column {row_filter.column!r}", expected=f"one of {table.column_names}"
        )
    column = table.column(row_filter.column)
    value = row_filter.value
    if pa.types.is_timestamp(column.type) and value is not None and row_filter.op not in ("in", "not_in"):
        value = to_utc(value)
    ops = {
        "==": pc.equal,
        "!=": pc.not_equal,
        "<": pc.less,
        "<=": pc.less_equal,
        ">": pc.greater,
        ">=": pc.greater_equal,
    }
    if row_filter.op in ops:
        mask = ops[row_filter.op](column, value)
    elif row_filter.op in ("in", "not_in"):
        mask = pc.is_in(column, value_set=pa.array(list(value), type=column.type))
        mask = pc.invert(mask) if row_filter.op == "not_in" else mask
    else:
        mask = pc.is_null(column) if row_filter.op == "is_null" else pc.is_valid(column)
    return pc.fill_null(mask, False)


def rows_digest(table: pa.Table) -> str:
    """SHA-256 of the rows' Arrow IPC serialisation (schema, values and order)."""
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    table = table.combine_chunks()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        for batch in table.to_batches():
            writer.write_batch(batch)
    return hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()


def get_training_data(
    settings: Settings,
    spine: Any,
    groups: Iterable[str | FeatureGroup | JoinRule],
    *,
    ts_column: str = "ts",
    key_column: str | None = None,
    features: dict[str, list[str]] | None = None,
    as_of: datetime | None = None,
    filters: Iterable[RowFilter | dict[str, Any]] = (),
) -> pa.Table:
    """Point-in-time-correct features for every spine row (see the module docstring)."""
    spec = TrainingDatasetSpec(
        ts_column=ts_column,
        as_of=to_utc(as_of) if as_of else None,
        joins=resolve_joins(settings, groups, key_column=key_column, features=features, as_of=as_of),
        filters=[f if isinstance(f, RowFilter) else RowFilter(**f) for f in filters],
    )
    return join_features(settings, spine, spec)


class TrainingDataset:
    """A named, frozen training dataset. Build with :meth:`create`, reopen with :meth:`load`."""

    def __init__(self, settings: Settings, spec: TrainingDatasetSpec):
        self.settings = settings
        self.spec = spec

    @property
    def name(self) -> str:
        return self.spec.name or ""

    @classmethod
    def create(
        cls,
        settings: Settings,
        name: str,
        spine: Any,
        groups: Iterable[str | FeatureGroup | JoinRule],
        *,
        ts_column: str = "ts",
        key_column: str | None = None,
        features: dict[str, list[str]] | None = None,
        as_of: datetime | None = None,
        filters: Iterable[RowFilter | dict[str, Any]] = (),
    ) -> TrainingDataset:
        """Pin everything, store the spine and the spec, and record the rows' digest."""
        check_name(name, what="training dataset name")
        db = connect(settings)
        if name in cls.names(settings):
            raise InvalidInputError(
                f"training dataset {name!r} already exists", fix="choose a new name; datasets are immutable"
            )
        joins = resolve_joins(settings, groups, key_column=key_column, features=features, as_of=as_of)
        table = normalise_spine(spine, ts_column, [j.key_column for j in joins])
        spine_table = f"td_{name}_spine"
        stored = db.create_table(spine_table, data=table, mode="overwrite")
        draft = TrainingDatasetSpec(
            name=name,
            ts_column=ts_column,
            as_of=to_utc(as_of) if as_of else None,
            joins=joins,
            filters=[f if isinstance(f, RowFilter) else RowFilter(**f) for f in filters],
            spine_table=spine_table,
            spine_data_version=stored.version,
        )
        rows = join_features(settings, stored.to_arrow(), draft)
        spec = draft.model_copy(
            update={
                "num_rows": rows.num_rows,
                "rows_sha256": rows_digest(rows),
                "created_at": utc_now(),
            }
        )
        record = _registry_row(name, spec)
        open_or_create_table(db, REGISTRY_TABLE, record.schema).add(record)
        return cls(settings, spec)

    @classmethod
    def load(cls, settings: Settings, name: str) -> TrainingDataset:
        check_name(name, what="training dataset name")
        db = connect(settings)
        found = []
        if REGISTRY_TABLE in table_names(db):
            found = (
                db.open_table(REGISTRY_TABLE)
                .search()
                .where(f"name = {escape_literal(name)}")
                .select(["spec_json"])
                .limit(None)
                .to_arrow()
                .column("spec_json")
                .to_pylist()
            )
        if not found:
            raise NotFoundError(
                f"training dataset {name!r} does not exist",
                expected=f"one of {cls.names(settings) or 'no datasets yet'}",
            )
        return cls(settings, TrainingDatasetSpec.model_validate_json(found[-1]))

    @staticmethod
    def names(settings: Settings) -> list[str]:
        db = connect(settings)
        if REGISTRY_TABLE not in table_names(db):
            return []
        return sorted(set(db.open_table(REGISTRY_TABLE).to_arrow().column("name").to_pylist()))

    def read(self, *, verify: bool = True) -> pa.Table:
        """Recreate the rows from the pinned versions; with ``verify``, prove they are identical."""
        from llmfti.features.erasures import unrecreatable_reason

        erased = unrecreatable_reason(self.settings, self.name)
        if erased is not None:
            raise NotReproducibleError(
                f"training dataset {self.name!r} can no longer be recreated: {erased}",
                expected="a dataset built from data that still exists",
                fix="build a new dataset (under a new name) from the current data",
            )
        spine = connect(self.settings).open_table(self.spec.spine_table, version=self.spec.spine_data_version)
        rows = join_features(self.settings, spine.to_arrow(), self.spec)
        if verify and rows_digest(rows) != self.spec.rows_sha256:
            raise NotReproducibleError(
                f"training dataset {self.name!r} no longer recreates its rows "
                f"(digest {rows_digest(rows)[:12]} != recorded {self.spec.rows_sha256[:12]})",
                expected="the pinned data versions to be unchanged",
                fix="a pinned Lance version was removed or rewritten (e.g. by cleanup_old_versions); "
                "rebuild the dataset under a new name",
            )
        return rows


def _registry_row(name: str, spec: TrainingDatasetSpec) -> pa.Table:
    import pyarrow as pa

    return pa.table(
        {
            "name": [name],
            "spec_json": [spec.model_dump_json()],
            "created_at": pa.array([spec.created_at], type=arrow_type("timestamp")),
        }
    )
