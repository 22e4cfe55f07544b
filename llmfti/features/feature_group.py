"""FeatureGroup: a versioned LanceDB table of typed features keyed by (entity key, event_time).

Two kinds of version: the *schema version* (``spec.version``; v1 and v2 are separate tables,
``fg_<name>_v<N>``) and the *data version* (each Lance commit: every write makes one, and any
past one can be read again). The group's definition lives in the table's schema metadata, so a
group can be reopened by name from any process. Bad rows of a ``quarantine`` write go to
``fgq_<name>_v<N>`` with their reasons.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from llmfti.errors import InvalidInputError, NotFoundError, SchemaMismatchError
from llmfti.features.conform import conform
from llmfti.features.spec import INGESTED_AT, SPEC_METADATA_KEY, FeatureGroupSpec, arrow_type
from llmfti.features.timestamps import to_utc, utc_now
from llmfti.features.validation import Policy, enforce, identity_keys, validate
from llmfti.lance import connect, escape_literal, open_or_create_table, table_names
from llmfti.naming import check_name

if TYPE_CHECKING:
    import pyarrow as pa

    from llmfti.config import Settings

WriteMode = Literal["append", "upsert"]
_TABLE = re.compile(r"^fg_(?P<name>.+)_v(?P<version>\d+)$")
_IN_LIST_MAX = 2000  # keys per SQL IN (...) filter; more keys scan the key columns instead


@dataclass(frozen=True)
class WriteResult:
    """What a write did. ``rows_received == rows_written + rows_quarantined`` always."""

    group: str
    version: int
    mode: str
    policy: str
    rows_received: int
    rows_written: int
    rows_quarantined: int
    data_version: int
    ingested_at: datetime
    write_id: str
    violations: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def quarantine_schema() -> pa.Schema:
    import pyarrow as pa

    return pa.schema(
        [
            pa.field("write_id", pa.string(), nullable=False),
            pa.field("row_index", pa.int64(), nullable=False),
            pa.field("row_json", pa.string(), nullable=False),
            pa.field("reasons", pa.list_(pa.string()), nullable=False),
            pa.field("source", pa.string()),
            pa.field(INGESTED_AT, arrow_type("timestamp"), nullable=False),
        ]
    )


class FeatureGroup:
    """One schema version of a feature group. Build with :meth:`create` or :meth:`open`."""

    def __init__(self, settings: Settings, spec: FeatureGroupSpec):
        self.settings = settings
        self.spec = spec

    # -- definition ----------------------------------------------------------------------

    @classmethod
    def create(cls, settings: Settings, spec: FeatureGroupSpec) -> FeatureGroup:
        """Create the group's table, or reopen it if it exists with exactly this definition."""
        db = connect(settings)
        open_or_create_table(db, spec.table_name, spec.table_schema())
        group = cls.open(settings, spec.name, spec.version)
        if group.spec != spec:
            raise SchemaMismatchError(
                f"feature group {spec.name} v{spec.version} already exists with a different definition",
                expected=f"the stored definition {group.spec.to_json()}",
                fix=f"declare the change as a new schema version (version: {spec.version + 1}); "
                "versions are separate tables, so v{spec.version} readers keep working",
            )
        return group

    @classmethod
    def open(cls, settings: Settings, name: str, version: int | None = None) -> FeatureGroup:
        """The group ``name`` at schema ``version`` (default: its highest version)."""
        check_name(name, what="feature group name")
        versions = sorted(v for n, v in _group_tables(settings) if n == name)
        if not versions:
            raise NotFoundError(
                f"feature group {name!r} does not exist",
                expected=f"one of {sorted({n for n, _ in _group_tables(settings)}) or 'no groups yet'}",
                fix="create it (llmfti features create SPEC.yaml, or the user pipeline) or check the name",
            )
        chosen = versions[-1] if version is None else version
        if chosen not in versions:
            raise NotFoundError(
                f"feature group {name!r} has no schema version {chosen}",
                expected=f"one of {versions}",
                fix="pick an existing version, or create the new one from its spec",
            )
        table = connect(settings).open_table(f"fg_{name}_v{chosen}")
        raw = (table.schema.metadata or {}).get(SPEC_METADATA_KEY)
        if raw is None:
            raise SchemaMismatchError(
                f"table fg_{name}_v{chosen} has no feature group definition in its metadata",
                fix="it was not created by llmfti; recreate the group from its spec",
            )
        return cls(settings, FeatureGroupSpec.from_json(raw))

    @staticmethod
    def list(settings: Settings) -> list[FeatureGroupSpec]:
        """Every group and schema version in this data_dir."""
        return [FeatureGroup.open(settings, name, version).spec for name, version in sorted(_group_tables(settings))]

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def version(self) -> int:
        return self.spec.version

    # -- writing -------------------------------------------------------------------------

    def write(
        self,
        data: Any,
        *,
        mode: WriteMode = "append",
        policy: Policy | None = None,
        source: str | None = None,
    ) -> WriteResult:
        """Validate and write rows. ``append`` adds rows; ``upsert`` replaces rows with the same
        (key, event_time). ``policy``: ``strict`` (default from settings) or ``quarantine``."""
        import pyarrow as pa

        if mode not in ("append", "upsert"):
            raise InvalidInputError(f"unknown write mode {mode!r}", expected="'append' or 'upsert'")
        policy = policy or self.settings.features.default_policy
        conformed = conform(self.spec, data)
        incoming = conformed.table
        existing = (
            self._existing_identities(incoming)
            if mode == "append" and self.spec.unique_key_event_time and incoming.num_rows
            else None
        )
        reasons = validate(self.spec, incoming, conformed.row_errors, existing)
        enforce(self.spec, reasons, policy, incoming.num_rows)

        write_id = uuid.uuid4().hex
        ingested_at = utc_now()
        if reasons:
            self._quarantine(conformed, reasons, write_id, source, ingested_at)
        good = pa.array([i not in reasons for i in range(incoming.num_rows)], type=pa.bool_())
        rows = incoming.filter(good)
        table = self._table()
        if rows.num_rows:
            stamp = pa.array([ingested_at] * rows.num_rows, type=arrow_type("timestamp"))
            rows = pa.Table.from_arrays([*rows.columns, stamp], schema=self.spec.table_schema())
            if mode == "append":
                table.add(rows)
            else:
                (
                    table.merge_insert([self.spec.key, self.spec.event_time])
                    .when_matched_update_all()
                    .when_not_matched_insert_all()
                    .execute(rows)
                )
        violations: dict[str, int] = {}
        for row_reasons in reasons.values():
            for rule in {r.split(":", 1)[0] for r in row_reasons}:
                violations[rule] = violations.get(rule, 0) + 1
        return WriteResult(
            group=self.name,
            version=self.version,
            mode=mode,
            policy=policy,
            rows_received=incoming.num_rows,
            rows_written=rows.num_rows,
            rows_quarantined=len(reasons),
            data_version=table.version,
            ingested_at=ingested_at,
            write_id=write_id,
            violations=violations,
        )

    def _existing_identities(self, incoming: pa.Table) -> pa.Array:
        import pyarrow.compute as pc

        keys = pc.unique(incoming.column(self.spec.key).drop_null()).to_pylist()
        columns = [self.spec.key, self.spec.event_time]
        if len(keys) <= _IN_LIST_MAX:
            stored = self.read(columns=columns, keys=keys)
        else:
            stored = self.read(columns=columns)
        return identity_keys(self.spec, stored)

    def _quarantine(self, conformed, reasons, write_id, source, ingested_at) -> None:  # noqa: ANN001
        records = [(i, conformed.row_json(i), reasons[i]) for i in sorted(reasons)]
        self.quarantine_records(records, source=source, write_id=write_id, ingested_at=ingested_at)

    def quarantine_records(
        self,
        records: list[tuple[int, str, list[str]]],
        *,
        source: str | None,
        write_id: str | None = None,
        ingested_at: datetime | None = None,
    ) -> str:
        """Store rows that never became feature rows: ``(row_index, raw_json, reasons)`` each.

        Used by writes under the ``quarantine`` policy, and by feature pipelines for input lines
        they could not parse (so those are set aside with a reason, not dropped). Returns the write id.
        """
        import pyarrow as pa

        write_id = write_id or uuid.uuid4().hex
        if not records:
            return write_id
        rows = pa.table(
            {
                "write_id": [write_id] * len(records),
                "row_index": [r[0] for r in records],
                "row_json": [r[1] for r in records],
                "reasons": [list(r[2]) for r in records],
                "source": [source] * len(records),
                INGESTED_AT: [ingested_at or utc_now()] * len(records),
            },
            schema=quarantine_schema(),
        )
        db = connect(self.settings)
        name = self.spec.quarantine_table_name
        open_or_create_table(db, name, rows.schema).add(rows)
        return write_id

    # -- reading -------------------------------------------------------------------------

    def _table(self, data_version: int | None = None):  # noqa: ANN202 - lancedb is imported lazily
        db = connect(self.settings)
        try:
            if data_version is None:
                return db.open_table(self.spec.table_name)
            return db.open_table(self.spec.table_name, version=data_version)
        except (ValueError, OSError) as exc:
            raise NotFoundError(
                f"feature group {self.name} v{self.version} has no data version {data_version}",
                expected=f"a version between 1 and {self.data_version}",
                fix="list versions with `llmfti features versions --group NAME`",
            ) from exc

    @property
    def data_version(self) -> int:
        """The latest Lance data version (grows with every write)."""
        return self._table().version

    def data_versions(self) -> list[dict[str, Any]]:
        """Every data version with its commit time and row count."""
        return [
            {
                "version": v["version"],
                "committed_at": _lance_time(v["timestamp"]),
                "rows": int(v.get("metadata", {}).get("total_rows", 0)),
            }
            for v in self._table().list_versions()
        ]

    def data_version_at(self, moment: datetime) -> int:
        """The latest data version committed at or before ``moment``."""
        moment = to_utc(moment)
        candidates = [v["version"] for v in self.data_versions() if v["committed_at"] <= moment]
        if not candidates:
            raise NotFoundError(
                f"feature group {self.name} v{self.version} had no data at {moment.isoformat()}",
                fix="choose a later as_of time",
            )
        return max(candidates)

    def read(
        self,
        *,
        data_version: int | None = None,
        as_of: datetime | None = None,
        columns: list[str] | None = None,
        keys: list[Any] | None = None,
    ) -> pa.Table:
        """Rows at ``data_version`` (default latest), optionally only those ingested by ``as_of``
        and only for ``keys``."""
        import pyarrow as pa
        import pyarrow.compute as pc

        table = self._table(data_version)
        wanted = list(columns) if columns else self.spec.table_schema().names
        if as_of is not None and INGESTED_AT not in wanted:
            wanted.append(INGESTED_AT)
        if keys is not None and not keys:
            result = self.spec.table_schema().empty_table().select(wanted)
        elif keys is not None and len(keys) <= _IN_LIST_MAX:
            literals = ", ".join(self._literal(k) for k in keys)
            query = table.search().where(f"`{self.spec.key}` IN ({literals})").select(wanted).limit(None)
            result = query.to_arrow()
        else:
            result = table.search().select(wanted).limit(None).to_arrow()
            if keys is not None:
                key_type = result.schema.field(self.spec.key).type
                result = result.filter(pc.is_in(result.column(self.spec.key), value_set=pa.array(keys, key_type)))
        if as_of is not None:
            result = result.filter(pc.less_equal(result.column(INGESTED_AT), to_utc(as_of)))
            if columns and INGESTED_AT not in columns:
                result = result.drop_columns([INGESTED_AT])
        return result

    def _literal(self, key: Any) -> str:
        if self.spec.key_type == "int64":
            return str(int(key))
        return escape_literal(str(key))

    def history(self, key: Any, *, data_version: int | None = None) -> pa.Table:
        """Every stored row of one entity, oldest event first (ties: ingestion order)."""
        rows = self.read(data_version=data_version, keys=[key])
        return rows.sort_by([(self.spec.event_time, "ascending"), (INGESTED_AT, "ascending")])

    def quarantined(self, *, write_id: str | None = None) -> pa.Table:
        """Rows set aside by ``quarantine`` writes, with their reasons."""
        db = connect(self.settings)
        if self.spec.quarantine_table_name not in table_names(db):
            return quarantine_schema().empty_table()
        rows = db.open_table(self.spec.quarantine_table_name).to_arrow()
        if write_id is not None:
            import pyarrow.compute as pc

            rows = rows.filter(pc.equal(rows.column("write_id"), write_id))
        return rows

    def count_rows(self, data_version: int | None = None) -> int:
        return self._table(data_version).count_rows()


def _lance_time(value: datetime) -> datetime:
    """Lance reports commit times as naive local datetimes; make them aware UTC."""
    from datetime import UTC

    return value.astimezone(UTC)  # a naive datetime is taken as local time, as Lance wrote it


def _group_tables(settings: Settings) -> list[tuple[str, int]]:
    found = []
    for table in table_names(connect(settings)):
        match = _TABLE.match(table)
        if match:
            found.append((match["name"], int(match["version"])))
    return found
