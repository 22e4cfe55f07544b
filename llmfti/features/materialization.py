"""Materialization: copy the latest row per entity from a feature group to the online store.

"Latest" is by ``event_time``, ties broken by ``ingested_at`` (a correction written later wins).
Incremental runs use a watermark stored in Redis beside the data (``watermark_us:v<N>`` in the
group's meta hash): only entities with rows ingested after it are recomputed, and for those the
latest row is taken over *all* their offline rows, so a late-arriving old event never overwrites
a newer online value. If Redis loses its data (and with it the watermark), the next run is full.
Reads are pinned to one Lance data version, recorded as ``data_version:v<N>``.

TTL: with ``online_ttl_s`` set, a hash expires at ``event_time + online_ttl_s``; rows already
past that at materialization are not written and their stale hash is deleted.

Tenants: when the group has a ``tenant`` feature (:data:`~llmfti.features.online_store.TENANT_COLUMN`),
"latest" is per (tenant, key) and each row is written under its tenant's online namespace, so two
tenants' entities with the same key stay apart; a group without it is the default tenant's.

Caveat: a write whose ``ingested_at`` precedes the watermark but commits after the run read the
table (a concurrent writer) is picked up only by a ``full`` run.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from llmfti.features.feature_group import FeatureGroup
from llmfti.features.online_codec import EVENT_TIME_FIELD, INGESTED_AT_FIELD, encode_column
from llmfti.features.online_store import TENANT_COLUMN, OnlineStore
from llmfti.features.spec import INGESTED_AT
from llmfti.features.timestamps import from_micros, to_micros, utc_now

if TYPE_CHECKING:
    import pyarrow as pa

    from llmfti.config import Settings


@dataclass(frozen=True)
class MaterializeResult:
    group: str
    version: int
    mode: str  # "full" or "incremental"
    data_version: int
    rows_scanned: int
    keys_written: int
    keys_expired: int
    watermark: datetime | None
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def latest_per_key(table: pa.Table, key: str, event_time: str, tenant: str | None = None) -> pa.Table:
    """One row per key (per (tenant, key) when ``tenant`` names a column): the greatest (event_time, ingested_at)."""
    import numpy as np
    import pyarrow.compute as pc

    if table.num_rows == 0:
        return table
    identity = [tenant, key] if tenant else [key]
    order = pc.sort_indices(
        table, sort_keys=[*((c, "ascending") for c in identity), (event_time, "ascending"), (INGESTED_AT, "ascending")]
    )
    ordered = table.take(order)
    if ordered.num_rows == 1:
        return ordered
    changes = np.zeros(ordered.num_rows - 1, dtype=bool)
    for column in identity:
        values = ordered.column(column).combine_chunks()
        if column == tenant:  # null and "" are the default tenant
            values = pc.fill_null(values, "")
        differ = pc.not_equal(values.slice(0, len(values) - 1), values.slice(1))
        changes |= np.asarray(differ.to_numpy(zero_copy_only=False), dtype=bool)
    last = np.append(changes.nonzero()[0], ordered.num_rows - 1)
    return ordered.take(last)


def materialize(
    settings: Settings,
    group: str | FeatureGroup,
    *,
    version: int | None = None,
    full: bool = False,
    store: OnlineStore | None = None,
) -> MaterializeResult:
    """Write what changed in ``group`` since the last run (everything if ``full``) to Redis."""
    import pyarrow as pa
    import pyarrow.compute as pc

    started = time.perf_counter()
    fg = group if isinstance(group, FeatureGroup) else FeatureGroup.open(settings, group, version)
    spec = fg.spec
    store = store or OnlineStore.from_settings(settings)
    meta = store.read_meta(spec.name)
    previous = None if full else meta.get(f"watermark_us:v{spec.version}")
    data_version = fg.data_version

    if previous is None:
        rows = fg.read(data_version=data_version)
        stamps = rows.column(INGESTED_AT)
    else:
        changed = fg.read(data_version=data_version, columns=[spec.key, INGESTED_AT])
        changed = changed.filter(pc.greater(changed.column(INGESTED_AT), from_micros(int(previous))))
        stamps = changed.column(INGESTED_AT)
        keys = pc.unique(changed.column(spec.key)).to_pylist()
        rows = fg.read(data_version=data_version, keys=keys)
    newest = pc.max(stamps).as_py() if len(stamps) else None
    watermark = newest if newest is not None else (from_micros(int(previous)) if previous else None)

    tenant_column = TENANT_COLUMN if any(f.name == TENANT_COLUMN for f in spec.features) else None
    latest = latest_per_key(rows, spec.key, spec.event_time, tenant_column)
    event_us = latest.column(spec.event_time).cast(pa.int64()).to_numpy(zero_copy_only=False)
    keys_all = latest.column(spec.key).to_pylist()
    tenants_all = latest.column(tenant_column).to_pylist() if tenant_column else [None] * len(keys_all)
    expired: list[Any] = []
    expired_tenants: list[str | None] = []
    expire_at = None
    if spec.online_ttl_s is not None and latest.num_rows:
        import numpy as np

        expire_ms = event_us // 1000 + spec.online_ttl_s * 1000
        alive = expire_ms > int(time.time() * 1000)
        expired = [k for k, ok in zip(keys_all, alive.tolist(), strict=True) if not ok]
        expired_tenants = [t for t, ok in zip(tenants_all, alive.tolist(), strict=True) if not ok]
        latest = latest.filter(pa.array(alive))
        expire_at = expire_ms[alive].tolist()
        event_us = event_us[np.asarray(alive)]
    columns = {f.name: encode_column(latest.column(f.name), f.type) for f in spec.features}
    columns[EVENT_TIME_FIELD] = event_us.tolist()
    columns[INGESTED_AT_FIELD] = latest.column(INGESTED_AT).cast(pa.int64()).to_pylist()
    tenants = latest.column(tenant_column).to_pylist() if tenant_column else None
    written = store.write_vectors(spec, latest.column(spec.key).to_pylist(), columns, expire_at, tenants=tenants)
    store.delete_vectors(spec, expired, expired_tenants)

    online = meta.get("online_version")
    fields: dict[str, Any] = {
        f"spec:v{spec.version}": spec.to_json(),
        f"data_version:v{spec.version}": data_version,
        f"materialized_at:v{spec.version}": utc_now().isoformat(),
    }
    if watermark is not None:
        fields[f"watermark_us:v{spec.version}"] = to_micros(watermark)
    if online is None or int(online) <= spec.version:
        fields["online_version"] = spec.version
    store.write_meta(spec.name, fields)
    return MaterializeResult(
        group=spec.name,
        version=spec.version,
        mode="incremental" if previous is not None else "full",
        data_version=data_version,
        rows_scanned=rows.num_rows,
        keys_written=written,
        keys_expired=len(expired),
        watermark=watermark,
        seconds=round(time.perf_counter() - started, 4),
    )
