"""OnlineStore: the latest feature values per entity, in Redis, read in well under a millisecond.

Layout (prefix = ``features.online_key_prefix``, default ``llmfti:fg:``):

- ``<prefix><group>:v<N>:<key>``: one hash per entity and schema version of the default tenant;
  fields are the features (see :mod:`llmfti.features.online_codec`) plus ``_event_time`` /
  ``_ingested_at``.
- ``<prefix><group>:v<N>@<tenant>:<key>``: the same for an entity of another tenant (the tenant
  URL-quoted, so it never holds a ``:``).
- ``<prefix><group>:meta``: which schema version is online (``online_version``), each
  version's definition (``spec:v<N>``, so readers need no LanceDB), and the materialization
  watermark and data version (``watermark_us:v<N>``, ``data_version:v<N>``).

Tenants: an entity's identity online is (tenant, key), and every read names the caller's tenant,
so one tenant can never read another tenant's entity, even with the same key. A feature group
opts into tenants with a string feature named ``tenant`` (:data:`TENANT_COLUMN`): materialization
puts each row under its tenant. Rows without it (and every group without the column, i.e. all
data written before tenants existed) belong to the default tenant (``ingest.default_tenant``),
whose keys keep the original layout; callers without a tenant read the default tenant, as
retrieval does.

Reads never raise for a missing entity: they return the declared defaults with
``missing=True``. A group that was never materialized reads as an empty, missing vector (and
is logged once). Redis failures raise :class:`StoreUnavailableError`, which callers can
degrade on; the offline store is never touched by a read.

TTL: when a group declares ``online_ttl_s``, each hash expires at ``event_time + online_ttl_s``
(set by materialization with PEXPIREAT), after which reads return defaults flagged missing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from redis.exceptions import RedisClusterException, RedisError

from llmfti.features.embedded_redis import redis_client, unavailable
from llmfti.features.online_codec import DECODERS, EVENT_TIME_FIELD
from llmfti.features.spec import FeatureGroupSpec
from llmfti.features.timestamps import from_micros
from llmfti.naming import check_name

if TYPE_CHECKING:
    from llmfti.config import Settings

log = logging.getLogger(__name__)
_EVENT_TIME = EVENT_TIME_FIELD.encode()
_FAILURES = (RedisError, RedisClusterException, OSError)  # what "Redis is unreachable" looks like
TENANT_COLUMN = "tenant"


@dataclass(slots=True)
class FeatureVector:
    """One entity's online features. ``missing``: the entity has no online row (values are defaults)."""

    group: str
    key: str
    values: dict[str, Any]
    missing: bool
    event_time: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _OnlineGroup:
    """What a reader needs to decode one group's hashes, cached per process."""

    __slots__ = ("name", "version", "base", "fields", "defaults", "loaded_at", "spec")

    def __init__(self, name: str, spec: FeatureGroupSpec | None, key_prefix: str):
        self.name = name
        self.spec = spec
        self.version = spec.version if spec else None
        self.base = f"{key_prefix}{name}:v{self.version}"
        features = spec.features if spec else []
        self.fields = [(f.name.encode(), f.name, DECODERS[f.type]) for f in features]
        self.defaults = {f.name: f.default for f in features}
        self.loaded_at = time.monotonic()

    def vector(self, key: str, raw: dict[bytes, bytes]) -> FeatureVector:
        if not raw:
            return FeatureVector(self.name, key, dict(self.defaults), True, None)
        try:
            values = {
                name: (None if (v := raw.get(field)) is None else decode(v)) for field, name, decode in self.fields
            }
            stamp = raw.get(_EVENT_TIME)
            return FeatureVector(self.name, key, values, False, from_micros(int(stamp)) if stamp else None)
        except (ValueError, TypeError, UnicodeDecodeError):
            return self._lenient(key, raw)

    def _lenient(self, key: str, raw: dict[bytes, bytes]) -> FeatureVector:
        """A hash with a value that does not decode (written by something else): null that value."""
        values = {}
        for field, name, decode in self.fields:
            try:
                values[name] = None if raw.get(field) is None else decode(raw[field])
            except (ValueError, TypeError, UnicodeDecodeError):
                log.warning("online feature %s.%s of %r does not decode; read as null", self.name, name, key)
                values[name] = None
        return FeatureVector(self.name, key, values, False, None)


class OnlineStore:
    """Reads (and, for materialization, writes) online feature vectors in Redis."""

    def __init__(self, settings: Settings, client: Any):
        self.settings = settings
        self.client = client
        self.key_prefix = settings.features.online_key_prefix
        self.default_tenant = settings.ingest.default_tenant
        self._refresh_s = settings.features.online_spec_refresh_s
        self._groups: dict[str, _OnlineGroup] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> OnlineStore:
        """A store on ``redis.url`` or the embedded server (started if needed)."""
        return cls(settings, redis_client(settings))

    # -- keys ----------------------------------------------------------------------------

    def meta_key(self, group: str) -> str:
        return f"{self.key_prefix}{group}:meta"

    def entity_key(self, group: str, version: int, key: Any, tenant: str | None = None) -> str:
        """The hash of one entity: the one place entity keys are built (see the module docstring)."""
        return f"{self.key_prefix}{group}:v{version}{self._namespace(tenant)}:{key}"

    def _namespace(self, tenant: str | None) -> str:
        # quoted, so a tenant name can never contain the ':' that ends the namespace
        return "" if tenant in (None, "", self.default_tenant) else f"@{quote(tenant, safe='')}"

    # -- reads ---------------------------------------------------------------------------

    def get(self, group: str, key: Any, *, tenant: str | None = None) -> FeatureVector:
        """The online feature vector of ``tenant``'s entity ``key`` (defaults with ``missing=True`` if absent)."""
        online = self._group(group)
        key = str(key)
        if online.version is None:
            return online.vector(key, {})
        try:
            raw = self.client.hgetall(f"{online.base}{self._namespace(tenant)}:{key}")
        except _FAILURES as exc:
            raise unavailable(self.settings, exc, f"reading {group} features of {key!r}") from exc
        return online.vector(key, raw)

    def get_many(self, group: str, keys: Sequence[Any], *, tenant: str | None = None) -> list[FeatureVector]:
        """Vectors for many entities of ``tenant`` in one pipelined round-trip, in the order of ``keys``."""
        online = self._group(group)
        keys = [str(k) for k in keys]
        if online.version is None or not keys:
            return [online.vector(k, {}) for k in keys]
        prefix = f"{online.base}{self._namespace(tenant)}:"
        try:
            pipe = self.client.pipeline(transaction=False)
            for key in keys:
                pipe.hgetall(prefix + key)
            raws = pipe.execute()
        except _FAILURES as exc:
            raise unavailable(self.settings, exc, f"reading {group} features of {len(keys)} keys") from exc
        return [online.vector(k, raw) for k, raw in zip(keys, raws, strict=True)]

    def _group(self, group: str) -> _OnlineGroup:
        online = self._groups.get(group)
        if online is not None and time.monotonic() - online.loaded_at < self._refresh_s:
            return online
        check_name(group, what="feature group name")
        try:
            info = self.client.hgetall(self.meta_key(group))
        except _FAILURES as exc:
            if online is not None:  # keep the known definition: on a cluster the entities may still answer
                log.warning("could not refresh the online definition of %s (%s); using the cached one", group, exc)
                online.loaded_at = time.monotonic()  # retry after online_spec_refresh_s, not on every read
                return online
            raise unavailable(self.settings, exc, f"reading the online definition of {group}") from exc
        version = info.get(b"online_version")
        spec = FeatureGroupSpec.from_json(info[f"spec:v{int(version)}".encode()]) if version else None
        if spec is None and group not in self._groups:
            log.warning("feature group %r has never been materialized; online reads return missing", group)
        online = self._groups[group] = _OnlineGroup(group, spec, self.key_prefix)
        return online

    def status(self, group: str) -> dict[str, Any]:
        """The online version, watermark and data version of every materialized schema version."""
        try:
            info = {k.decode(): v.decode() for k, v in self.client.hgetall(self.meta_key(group)).items()}
        except _FAILURES as exc:
            raise unavailable(self.settings, exc, f"reading the online status of {group}") from exc
        return {k: v for k, v in info.items() if not k.startswith("spec:")}

    # -- writes (used by materialization) ------------------------------------------------

    def write_vectors(
        self,
        spec: FeatureGroupSpec,
        keys: Sequence[Any],
        columns: dict[str, list[Any]],
        expire_at_ms: Iterable[int | None] | None = None,
        *,
        batch_rows: int | None = None,
        tenants: Sequence[str | None] | None = None,
    ) -> int:
        """Write one hash per key (``columns``: field name -> encoded values, None = null); ``tenants``:
        each row's tenant (None: the default tenant).

        Non-null fields are set with HSET, null ones removed with HDEL, so a reader never sees an
        entity disappear while it is rewritten. Returns the number of hashes written.
        """
        batch = batch_rows or self.settings.features.materialize_batch_rows
        names = list(columns)
        expiries = list(expire_at_ms) if expire_at_ms is not None else [None] * len(keys)
        tenants = list(tenants) if tenants is not None else [None] * len(keys)
        written = 0
        try:
            for start in range(0, len(keys), batch):
                pipe = self.client.pipeline(transaction=False)
                for row in range(start, min(start + batch, len(keys))):
                    redis_key = self.entity_key(spec.name, spec.version, keys[row], tenants[row])
                    mapping = {}
                    nulls = []
                    for name in names:
                        value = columns[name][row]
                        if value is None:
                            nulls.append(name)
                        else:
                            mapping[name] = value
                    pipe.hset(redis_key, mapping=mapping)
                    if nulls:
                        pipe.hdel(redis_key, *nulls)
                    if expiries[row] is not None:
                        pipe.pexpireat(redis_key, expiries[row])
                pipe.execute()
                written = min(start + batch, len(keys))
        except _FAILURES as exc:
            raise unavailable(
                self.settings, exc, f"materializing {spec.name} v{spec.version} ({written} of {len(keys)} written)"
            ) from exc
        return written

    def delete_vectors(self, spec: FeatureGroupSpec, keys: Sequence[Any],
                       tenants: Sequence[str | None] | None = None) -> int:
        if not keys:
            return 0
        tenants = list(tenants) if tenants is not None else [None] * len(keys)
        try:
            pipe = self.client.pipeline(transaction=False)
            for key, tenant in zip(keys, tenants, strict=True):
                pipe.delete(self.entity_key(spec.name, spec.version, key, tenant))
            return sum(pipe.execute())
        except _FAILURES as exc:
            raise unavailable(self.settings, exc, f"expiring {spec.name} keys") from exc

    def read_meta(self, group: str) -> dict[str, str]:
        try:
            return {k.decode(): v.decode() for k, v in self.client.hgetall(self.meta_key(group)).items()}
        except _FAILURES as exc:
            raise unavailable(self.settings, exc, f"reading the online state of {group}") from exc

    def write_meta(self, group: str, fields: dict[str, Any]) -> None:
        try:
            self.client.hset(self.meta_key(group), mapping=fields)
        except _FAILURES as exc:
            raise unavailable(self.settings, exc, f"recording the online state of {group}") from exc
        self._groups.pop(group, None)
