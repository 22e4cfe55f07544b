"""VectorIndex: the ``chunks`` feature group of one index, with versions, tags and search.

Every write is one Lance commit; a build makes several (its rows, then the search indices).
The versions a user sees are the *published* ones: the last commit of each build or rollback,
recorded in the build log. Searches without a version read the newest published version, so a
reader never sees a build half-done, and every version a response names can be searched again
(time travel) or restored (rollback). The numbers are Lance's commit numbers, so they are not
consecutive (a new index's first version is typically 4).

A document's identity is ``(tenant, doc_id)`` (chunk schema v2; v1 keyed documents by id alone,
so two tenants' documents with the same id replaced each other). A v1 table is not migrated: it
is left in place and opening the index asks for a rebuild. The table's schema metadata records
the embedder that built it; opening with another embedder is refused.

Each row also holds its chunk's sentence vectors (``sentence_embeddings``, llmfti/index/sentences.py),
read by hybrid search when the version's fusion uses sentence evidence. Tables written before that column
existed stay readable and writable as they are (their chunks count as average on that evidence);
``llmfti index tune-fusion`` asks for a rebuild into a new index to add it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, NamedTuple

from llmfti.embedders.base import encode_queries
from llmfti.errors import ConfigError, EmbedderMismatchError, InvalidInputError, NotFoundError
from llmfti.filters import Filter, where_clause
from llmfti.index import history
from llmfti.index.fusion import Fusion, decode, encode, fused_scores
from llmfti.lance import connect, escape_literal, open_or_create_table, table_names
from llmfti.naming import check_name

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

    from llmfti.config import SearchMode, Settings
    from llmfti.embedders import Embedder, EmbedderInfo

SCHEMA_VERSION = 2  # v2: identity (tenant, doc_id), tenant-qualified chunk ids, origin + build_tenant columns
PUBLISHED_TTL_S = 1.0  # how long a reader trusts its list of published versions (= the connection's consistency)
EMBEDDER_KEY = b"llmfti.embedder"
SENTENCES = "sentence_embeddings"  # per chunk: one vector per sentence (may be null: built without them)
log = logging.getLogger(__name__)
FUSION_KEY = "llmfti.fusion"  # schema metadata of a version: its tuned hybrid fusion (llmfti/index/fusion.py)
FILTERABLE = {
    "doc_id": "string",
    "source": "string",
    "title": "string",
    "content_hash": "string",
    "event_time": "timestamp",
    "ingested_at": "timestamp",
}
_RESULT_COLUMNS = ["chunk_id", "doc_id", "text", "metadata"]
_VECTOR_COLUMNS = {False: [], True: ["embedding"]}  # search(..., with_vectors=True) also reads the stored vectors


class DocState(NamedTuple):
    """What the index holds about one document (identity ``(tenant, doc_id)``) in its latest commit."""

    doc_hash: str
    source: str  # the path the build was given
    origin: str  # the file the document was read from
    build_tenant: str  # the tenant of the build that wrote it: a build syncs only its own rows


@dataclass(frozen=True)
class SearchHit:
    chunk_id: str
    doc_id: str
    score: float
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)
    vector: Any = field(default=None, repr=False, compare=False)
    """The chunk's stored embedding (numpy float32), only from ``search(..., with_vectors=True)``."""
    sentence_vectors: Any = field(default=None, repr=False, compare=False)
    """Its sentences' vectors (numpy ``(n, dim)``), read only by a hybrid search whose fusion uses them."""


@dataclass(frozen=True)
class SearchResult:
    version: int
    mode: str
    hits: list[SearchHit]


def table_name(index: str, schema_version: int = SCHEMA_VERSION) -> str:
    return f"{check_name(index, what='index name')}__chunks_v{schema_version}"


def chunks_schema(info: EmbedderInfo) -> pa.Schema:
    import pyarrow as pa

    ts = pa.timestamp("us", tz="UTC")
    return pa.schema(
        [
            ("chunk_id", pa.string()),
            ("doc_id", pa.string()),
            ("text", pa.string()),
            ("embedding", pa.list_(pa.float32(), info.dimension)),
            (SENTENCES, pa.list_(pa.list_(pa.float32(), info.dimension))),
            ("metadata", pa.string()),  # JSON object: document metadata + chunk position
            ("tenant", pa.string()),
            ("source", pa.string()),
            ("origin", pa.string()),  # the file the document was read from
            ("build_tenant", pa.string()),  # the tenant of the build that wrote the row
            ("title", pa.string()),
            ("content_hash", pa.string()),  # of the chunk text
            ("doc_hash", pa.string()),  # of the document + chunking config: drives incremental builds
            ("event_time", ts),
            ("ingested_at", ts),
        ],
        metadata={EMBEDDER_KEY: json.dumps(info.to_dict()).encode()},
    )


def search_where(settings: Settings, tenant: str | None, filters: Iterable[Filter] = ()) -> str:
    """The SQL filter of a search: the caller's tenant (else the default tenant) and the user's filters."""
    tenant_filter = f"tenant = {escape_literal(tenant or settings.ingest.default_tenant)}"
    return " AND ".join(filter(None, [tenant_filter, where_clause(filters, FILTERABLE)]))


class VectorIndex:
    """One index's chunks table. Build with :meth:`open` or :meth:`create`."""

    def __init__(self, settings: Settings, name: str, table: Any, info: dict[str, Any] | None = None):
        self.settings = settings
        self.name = name
        self._db = connect(settings)
        self._table = table
        self.info = _recorded_embedder(table) if info is None else info
        """The embedder record it reads and writes with: by :meth:`open`, the newest published version's (a re-embed
        not yet published changes nothing); else the given table's."""
        self._embedder: Embedder | None = None
        self._versions: OrderedDict[int, Any] = OrderedDict()
        self._datasets: OrderedDict[int, Any] = OrderedDict()
        self._fusions: dict[int, Fusion] = {}  # per version: a version's schema metadata never changes
        self._published: tuple[float, list[int]] = (float("-inf"), [])
        self._refreshing = False
        self._lock = threading.Lock()
        from llmfti.embedders.registry_embedder import pinned_name

        if self.info["name"] != pinned_name(settings):  # a registry alias resolved to the version it names
            raise _mismatch(name, self.info, settings.embedder.model)

    # ----------------------------------------------------------------- lifecycle
    @classmethod
    def exists(cls, settings: Settings, name: str | None = None) -> bool:
        return table_name(name or settings.index.name) in table_names(connect(settings))

    @classmethod
    def open(cls, settings: Settings, name: str | None = None) -> VectorIndex:
        name = name or settings.index.name
        if not cls.exists(settings, name) and table_name(name, 1) in table_names(connect(settings)):
            raise NotFoundError(
                f"index {name!r} under {settings.data_dir} has chunk schema v1 (documents identified without "
                f"their tenant), which this version no longer reads",
                expected=f"chunk schema v{SCHEMA_VERSION}",
                fix=f"rebuild it from its documents: llmfti index build PATH --index {name} [--tenant T] "
                    f"(the old table {table_name(name, 1)} is left in place; delete it when done)",
            )
        if not cls.exists(settings, name):
            raise NotFoundError(
                f"index {name!r} does not exist under {settings.data_dir}",
                fix=f"build it first: llmfti index build PATH --index {name}",
            )
        db = connect(settings)
        return cls(settings, name, db.open_table(table_name(name)), published_embedder(db, name))

    @classmethod
    def create(cls, settings: Settings, name: str, info: EmbedderInfo) -> VectorIndex:
        table = open_or_create_table(connect(settings), table_name(name), chunks_schema(info))
        return cls(settings, name, table)

    @property
    def version(self) -> int:
        """The newest published version: what a search without ``version`` reads."""
        published = self.published_versions()
        return published[-1] if published else self.head_version

    @property
    def head_version(self) -> int:
        """The newest commit, published or not (builds write here)."""
        return int(self._table.version)

    def published_versions(self) -> list[int]:
        """Versions recorded in the build log (one per build or rollback), oldest first.

        Re-read at most every ``PUBLISHED_TTL_S``; once known, a stale list is served while a
        background thread re-reads it (a few ms of LanceDB I/O kept off the request path).
        """
        with self._lock:
            at, versions = self._published
            if time.monotonic() - at < PUBLISHED_TTL_S:
                return versions
            known = at != float("-inf")
            if known and self._refreshing:
                return versions
            self._refreshing = known
        if not known:
            return self._read_published()
        threading.Thread(target=self._read_published, name="index-published-versions", daemon=True).start()
        return versions

    def _read_published(self) -> list[int]:
        try:
            versions = history.published_versions(self._db, self.log_key)
            with self._lock:
                self._published = (time.monotonic(), versions)
            return versions
        finally:
            with self._lock:
                self._refreshing = False

    @property
    def log_key(self) -> str:
        """This index's entries in the build log: its chunks table (a schema bump starts a new history)."""
        return table_name(self.name)

    def record_build(self, kind: str, summary: dict[str, Any], version: int | None = None) -> int:
        """Publish the head commit (or ``version``): log it as a build, rollback or fusion; returns its version."""
        version = self.head_version if version is None else version
        history.record_build(self._db, self.log_key, version, kind, summary)
        with self._lock:
            self._published = (float("-inf"), [])
        return version

    def count_rows(self, version: int | str | None = None) -> int:
        return int(self._at(version).count_rows())

    def embedder(self) -> Embedder:
        """The embedder this index was built with, loaded once and checked against the record."""
        if self._embedder is None:
            from llmfti.embedders import load_embedder

            embedder = load_embedder(self.settings)  # whole settings: registry embedder versions too
            if embedder.info.to_dict() != self.info:
                raise _mismatch(self.name, self.info, embedder.info.to_dict())
            self._embedder = embedder
        return self._embedder

    # ----------------------------------------------------------------- writing
    def doc_state(self) -> dict[tuple[str, str], DocState]:
        """``(tenant, doc_id) -> DocState`` of the newest commit."""
        columns = ["tenant", "doc_id", *DocState._fields]
        table = self._table.search().select(columns).limit(None).to_arrow()
        values = [table.column(c).to_pylist() for c in columns]
        return {(t, d): DocState(*rest) for t, d, *rest in zip(*values, strict=True)}

    def embeddings_of(self, identities: Iterable[tuple[str, str]]) -> dict[str, list[float]]:
        """``chunk_id -> embedding`` of the existing chunks of these ``(tenant, doc_id)`` (reused when unchanged)."""
        return {row["chunk_id"]: row["embedding"]
                for row in self._rows_of(identities, ["chunk_id", "embedding"], "head")}

    def sentence_embeddings_of(self, identities: Iterable[tuple[str, str]]) -> dict[str, Any]:
        """``chunk_id -> (sentences, dim) matrix`` of the existing chunks of these documents that have them."""
        import numpy as np

        if not self.has_sentence_vectors():
            return {}
        rows = self._rows_of(identities, ["chunk_id", SENTENCES], "head")
        return {row["chunk_id"]: np.asarray(row[SENTENCES], dtype=np.float32) for row in rows if row[SENTENCES]}

    def has_sentence_vectors(self, version: int | str | None = "head") -> bool:
        """Whether the table (at ``version``; default its newest commit) has the sentence vectors column."""
        table = self._table if version == "head" else self._at(version)
        return SENTENCES in table.schema.names

    def chunk_ids_of(self, doc_ids: Iterable[str], version: int | str | None = None, *,
                     tenant: str | None = None) -> dict[str, list[str]]:
        """``doc_id -> [chunk_id, ...]`` (in document order) for documents of ``tenant`` (default:
        ``ingest.default_tenant``, the one a search without a tenant reads)."""
        tenant = tenant or self.settings.ingest.default_tenant
        out: dict[str, list[tuple[int, str]]] = {}
        for row in self._rows_of([(tenant, d) for d in doc_ids], ["doc_id", "chunk_id", "metadata"], version):
            position = json.loads(row["metadata"] or "{}").get("chunk_index", 0)
            out.setdefault(row["doc_id"], []).append((position, row["chunk_id"]))
        return {doc: [cid for _, cid in sorted(chunks)] for doc, chunks in out.items()}

    def _rows_of(self, identities: Iterable[tuple[str, str]], columns: list[str],
                 version: int | str | None = None) -> list[dict[str, Any]]:
        """``columns`` of every chunk of these documents, queried 500 documents at a time."""
        table = self._table if version == "head" else self._at(version)
        ids, rows = sorted(set(identities)), []
        for start in range(0, len(ids), 500):
            rows.extend(table.search().where(_identity_clause(ids[start:start + 500])).select(columns)
                        .limit(None).to_list())
        return rows

    def apply(self, rows: pa.Table | None, replace: Sequence[tuple[str, str]]) -> int:
        """In ONE commit: upsert ``rows`` and delete every other chunk of the ``replace`` documents
        (``(tenant, doc_id)`` pairs: another tenant's document with the same id is never touched).

        Readers see the old version or the new one, never a half-applied build.
        """
        schema = self._table.schema
        if rows is not None and SENTENCES in schema.names and SENTENCES not in rows.schema.names:
            import pyarrow as pa  # rows built without sentence vectors (e.g. by a benchmark): stored as null

            rows = rows.append_column(SENTENCES, pa.nulls(rows.num_rows, schema.field(SENTENCES).type))
        rows = schema.empty_table() if rows is None else rows.select(schema.names).cast(schema)
        if rows.num_rows == 0 and not replace:
            return self.head_version
        self._check_head_embedder()
        merge = self._table.merge_insert("chunk_id").when_matched_update_all().when_not_matched_insert_all()
        if replace:
            merge = merge.when_not_matched_by_source_delete(_identity_clause(sorted(set(replace))))
        merge.execute(rows)
        return self.head_version

    def _check_head_embedder(self) -> None:
        """Refuse to write onto a newest commit whose vectors another embedder made: a re-embed that stopped
        before it was published (killed, or still running). Readers keep the published version meanwhile."""
        self._table.checkout_latest()
        head = _recorded_embedder(self._table)
        if head != self.info:
            raise EmbedderMismatchError(
                f"index {self.name!r}: its newest commit (version {self.head_version}) holds vectors of embedder "
                f"{head.get('name')!r}, which was never published (a re-embed that stopped, or one still running); "
                f"this build embeds with {self.info.get('name')!r}",
                expected=f"the newest commit embedded by {self.info.get('name')!r}, as its published version is",
                fix=f"finish the re-embed: llmfti index build PATH --index {self.name} --embedder {head.get('name')}, "
                    f"or go back to the published vectors: llmfti index rollback {self.version}",
            )

    def refresh_search_indices(self) -> None:
        """Create the full-text and tenant indices (and ANN above ``ann_min_rows``), or fold new rows in."""
        from datetime import timedelta

        from lancedb.index import FTS, Bitmap

        existing = {idx.columns[0]: idx for idx in self._table.list_indices()}
        if "text" not in existing:
            self._table.create_index("text", config=FTS())
        if "tenant" not in existing:  # every search filters on tenant: halves filtered ANN latency at 100k rows
            self._table.create_index("tenant", config=Bitmap())
        if "embedding" not in existing and self._table.count_rows() >= self.settings.index.ann_min_rows:
            self._table.create_index(
                metric="cosine", vector_column_name="embedding", index_type=self.settings.index.ann_index_type
            )
        stats = [self._table.index_stats(idx.name) for idx in self._table.list_indices()]
        if any(s is not None and s.num_unindexed_rows for s in stats):
            # Fold new rows into the indices; keep every old version (time travel needs them).
            self._table.optimize(cleanup_older_than=timedelta(days=365 * 100))

    def has_ann_index(self) -> bool:
        return any(idx.columns[0] == "embedding" for idx in self._table.list_indices())

    # ----------------------------------------------------------------- versions
    def tag(self, tag: str, version: int | None = None) -> int:
        check_name(tag, what="tag")
        version = version or self.version
        self._known_version(version)
        tags = self._table.tags
        if tag in tags.list():
            tags.update(tag, version)
        else:
            tags.create(tag, version)
        return version

    def tags(self) -> dict[str, int]:
        return {name: int(info["version"]) for name, info in self._table.tags.list().items()}

    def resolve_version(self, version: int | str) -> int:
        """A version number, or the version a tag points at."""
        if isinstance(version, int) or str(version).isdigit():
            return self._known_version(int(version))
        tags = self.tags()
        if version not in tags:
            raise NotFoundError(
                f"index {self.name!r} has no tag {version!r}",
                expected=f"a version number or one of the tags {sorted(tags) or '(none yet)'}",
                fix="list them with: llmfti index versions",
            )
        return tags[str(version)]

    def rollback(self, version: int | str) -> int:
        """Make the content of ``version`` the latest version (a new commit; history is kept)."""
        target = self.resolve_version(version)
        self._table.restore(target)
        return self.record_build("rollback", {"restored_version": target})

    def versions(self) -> list[dict[str, Any]]:
        """Every build and rollback: version, time, row count, summary and tags."""
        by_version: dict[int, list[str]] = {}
        for tag, version in self.tags().items():
            by_version.setdefault(version, []).append(tag)
        entries = []
        for entry in history.builds(self._db, self.log_key):
            version = int(entry["version"])
            entries.append(
                {
                    "version": version,
                    "kind": entry["kind"],
                    "time": entry["at"],
                    "rows": self.count_rows(version),
                    "tags": sorted(by_version.get(version, [])),
                    "summary": entry["summary"],
                }
            )
        return entries

    def _known_version(self, version: int) -> int:
        """``version`` if it is published (an index written without the build log: any commit)."""
        published = self.published_versions()
        if published and version not in published:  # published since the list was read (e.g. by another process)?
            published = self._read_published()
        known = published or [int(v["version"]) for v in self._table.list_versions()]
        if version not in known:
            raise NotFoundError(
                f"index {self.name!r} has no version {version}",
                expected=f"one of the versions {_listing(known)} (one per build or rollback; the numbers are "
                         "commit numbers, and a build makes several commits, so they are not consecutive)",
                fix="list them with: llmfti index versions",
            )
        return version

    def _at(self, version: int | str | None) -> Any:
        """The table at ``version`` (the newest published if None); versions are opened once and cached."""
        number = self.version if version is None else self.resolve_version(version)
        with self._lock:
            if number not in self._versions:
                opened = self._db.open_table(table_name(self.name), version=number)
                if _recorded_embedder(opened) != self.info:  # re-embedded since: never mix embedders
                    raise _mismatch(self.name, _recorded_embedder(opened), self.info)
                self._versions[number] = opened
                while len(self._versions) > 16:
                    self._versions.popitem(last=False)
            self._versions.move_to_end(number)
            return self._versions[number]

    def _dataset_at(self, version: int | str | None) -> tuple[int, Any]:
        """``(number, pylance dataset)`` at ``version``, opened once: searches run on it directly, without
        lancedb's query builder and its hops to a background event loop (half a hybrid search's CPU time)."""
        number = self.version if version is None else self.resolve_version(version)
        with self._lock:
            dataset = self._datasets.get(number)
            if dataset is not None:
                self._datasets.move_to_end(number)
                return number, dataset
        dataset = self._at(number).to_lance()  # _at checks the version's embedder record
        with self._lock:
            self._datasets[number] = dataset
            while len(self._datasets) > 16:
                self._datasets.popitem(last=False)
        return number, dataset

    # ----------------------------------------------------------------- fusion
    def fusion(self, version: int | str | None = None) -> Fusion:
        """How hybrid search fuses at ``version`` (the newest published if None): the fusion stored in that
        version's schema metadata (``llmfti index tune-fusion``), else plain RRF with ``index.rrf_k``."""
        return self._fusion_of(*self._dataset_at(version))

    def fusion_record(self, version: int | str | None = None) -> dict[str, Any] | None:
        """The fusion stored at ``version`` and how it was chosen; None when that version has none (plain RRF)."""
        _, dataset = self._dataset_at(version)
        raw = (dataset.schema.metadata or {}).get(FUSION_KEY.encode())
        if raw is None:
            return None
        fusion, chosen = decode(raw)
        return {"fusion": fusion.to_dict(), "text": fusion.describe(), "chosen": chosen}

    def store_fusion(self, fusion: Fusion, record: dict[str, Any]) -> int:
        """Store ``fusion`` (and ``record``: how it was chosen) as a new published version with the same
        chunks; later builds keep it, a rollback to an earlier version restores that version's fusion."""
        summary = {"fusion": fusion.to_dict(), "text": fusion.describe(), "by": record.get("by")}
        return self._write_fusion(encode(fusion, record), summary)

    def clear_fusion(self, reason: str) -> int:
        """Go back to plain RRF (``index.rrf_k``) in a new published version."""
        return self._write_fusion(None, {"fusion": None, "text": "plain RRF (default)", "reason": reason})

    def _write_fusion(self, raw: str | None, summary: dict[str, Any]) -> int:
        self._table.checkout_latest()
        dataset = self._table.to_lance()
        dataset.update_schema_metadata({FUSION_KEY: raw})  # one commit: the same rows, new metadata
        self._table.checkout_latest()
        return self.record_build("fusion", summary, version=int(dataset.version))

    def _fusion_of(self, number: int, dataset: Any) -> Fusion:
        fusion = self._fusions.get(number)
        if fusion is None:
            raw = (dataset.schema.metadata or {}).get(FUSION_KEY.encode())
            fusion = Fusion(rrf_k=self.settings.index.rrf_k)
            if raw is not None:
                try:
                    fusion = decode(raw)[0]
                except ConfigError as exc:  # search keeps working, on plain RRF, and says why
                    log.warning("index %r version %d: %s; hybrid search uses plain RRF", self.name, number, exc)
            with self._lock:
                if len(self._fusions) > 64:
                    self._fusions.clear()
                self._fusions[number] = fusion
        return fusion

    # ----------------------------------------------------------------- searching
    def embed_query(self, text: str) -> np.ndarray:
        return encode_queries(self.embedder(), [text])[0]

    def search(
        self,
        query: str,
        *,
        k: int | None = None,
        mode: SearchMode | None = None,
        tenant: str | None = None,
        filters: Iterable[Filter] = (),
        version: int | str | None = None,
        vector: np.ndarray | None = None,
        with_vectors: bool = False,
    ) -> SearchResult:
        """Top-``k`` chunks for ``query`` within one tenant; ``version`` searches the past.
        ``with_vectors``: each hit also carries its chunk's stored embedding (``SearchHit.vector``)."""
        k = self._check_k(k)
        mode = mode or self.settings.index.default_mode
        if mode not in ("dense", "fts", "hybrid"):
            raise InvalidInputError(f"unknown search mode {mode!r}", expected="dense, fts or hybrid")
        if not query or not query.strip():
            raise InvalidInputError("the search query is empty", fix="pass some text to search for")
        number, dataset = self._dataset_at(version)
        if mode != "fts" and vector is None:
            vector = self.embed_query(query)
        fusion = self._fusion_of(number, dataset) if mode == "hybrid" else None
        hits = self.ranked(dataset, mode, query, vector, search_where(self.settings, tenant, filters), k, fusion,
                           with_vectors)
        return SearchResult(number, mode, hits)

    def candidates(self, query: str, vector: np.ndarray, depth: int, *, tenant: str | None = None,
                   version: int | str | None = None) -> tuple[list[SearchHit], list[SearchHit]]:
        """The dense and full-text rankings (``depth`` deep) that hybrid search fuses, each hit with its sentence
        vectors when the version has them: what ``llmfti index tune-fusion`` scores fusions on."""
        _, dataset = self._dataset_at(version)
        where = search_where(self.settings, tenant)
        extra = [SENTENCES] if SENTENCES in dataset.schema.names else []
        return self._dense(dataset, vector, where, depth, extra), self._fts(dataset, query, where, depth, extra)

    @classmethod
    def ranked(cls, dataset: Any, mode: SearchMode, query: str, vector: np.ndarray | None, where: str, k: int,
               fusion: Fusion | None, with_vectors: bool = False) -> list[SearchHit]:
        """The top-``k`` hits of one dataset version: the one ranking step that every search path shares
        (``vector`` for dense/hybrid, ``fusion`` for hybrid)."""
        if mode == "fts":
            return cls._fts(dataset, query, where, k, with_vectors)
        if mode == "dense":
            return cls._dense(dataset, vector, where, k, with_vectors)
        return cls._hybrid(dataset, query, vector, where, k, fusion or Fusion(), with_vectors)

    @classmethod
    def _hybrid(cls, dataset: Any, query: str, vector: np.ndarray | None, where: str, k: int, fusion: Fusion,
                with_vectors: bool) -> list[SearchHit]:
        """Hybrid search in two steps. (1) Each ranking's ~50 candidates with only what ``fusion`` scores with
        (:func:`_candidate_columns`; for rank or score fusion, just row ids: reading any column of 50 scattered
        rows costs more CPU than the search itself); (2) the rows of the fused best, and only those, read by row
        id. The result is what fusing whole rows gives (:func:`~llmfti.index.fusion.fuse`): every candidate
        scoring at least the ``k``-th best is read, so ties are broken by chunk id as there."""
        depth = max(k * 4, 50)
        needed = _candidate_columns(fusion, dataset)
        fts = _fts_pool().submit(cls._fts, dataset, query, where, depth, needed, row_ids=True)  # both at once
        dense = cls._dense(dataset, vector, where, depth, needed, row_ids=True)
        row_of: dict[str, int] = {}
        rankings = [_keyed(pairs, row_of) for pairs in (dense, fts.result())]
        scores, hits = fused_scores(*rankings, fusion, query, vector)
        shortlist = [replace(hits[key], score=scores[key]) for key in _at_least_kth(scores, k)]
        complete = _completed(dataset, shortlist, [row_of[h.chunk_id] for h in shortlist], with_vectors)
        return sorted(complete, key=lambda h: (-h.score, h.chunk_id))[:k]

    def _check_k(self, k: int | None) -> int:
        k = k or self.settings.index.default_k
        if not 1 <= k <= self.settings.index.max_k:
            raise InvalidInputError(
                f"k={k} is out of range", expected=f"1..{self.settings.index.max_k}", fix="ask for fewer results"
            )
        return k

    @staticmethod
    def _dense(dataset: Any, vector: np.ndarray, where: str, k: int, extra: bool | list[str] = False, *,
               row_ids: bool = False) -> Any:
        """Nearest ``k`` by cosine within ``where`` (prefiltered), on the ANN index when there is one.
        ``extra``: stored columns to read too (True: the chunk vectors). ``row_ids``: candidates for hybrid
        search, ``(hit, row id)`` pairs of only the columns listed in ``extra`` (see :func:`_candidate_columns`)."""
        return _scored(dataset.to_table(
            columns=_read_columns(extra, row_ids, "_distance"), filter=where, prefilter=True, with_row_id=row_ids,
            disable_scoring_autoprojection=True,
            nearest={"column": "embedding", "q": vector, "k": k, "metric": "cosine"},
        ), extra, row_ids, lambda row: 1.0 - float(row["_distance"]))

    @staticmethod
    def _fts(dataset: Any, text: str, where: str, k: int, extra: bool | list[str] = False, *,
             row_ids: bool = False) -> Any:
        """Top ``k`` by BM25 on the full-text index within ``where`` (prefiltered); ``extra`` and ``row_ids`` as in
        :meth:`_dense`."""
        return _scored(dataset.to_table(
            columns=_read_columns(extra, row_ids, "_score"), filter=where, prefilter=True, limit=k,
            with_row_id=row_ids, full_text_query={"query": text, "columns": ["text"]},
            disable_scoring_autoprojection=True,
        ), extra, row_ids, lambda row: float(row["_score"]))


_pool: list[Any] = []
_pool_lock = threading.Lock()


def _fts_pool() -> Any:
    """The threads that run a hybrid search's full-text half while the calling thread runs the dense half."""
    with _pool_lock:
        if not _pool:
            from concurrent.futures import ThreadPoolExecutor

            _pool.append(ThreadPoolExecutor(max_workers=4, thread_name_prefix="llmfti-fts"))
        return _pool[0]


def _identity_clause(identities: Sequence[tuple[str, str]]) -> str:
    """SQL matching the chunks of these ``(tenant, doc_id)`` documents, grouped by tenant."""
    by_tenant: dict[str, list[str]] = {}
    for tenant, doc_id in identities:
        by_tenant.setdefault(tenant, []).append(doc_id)
    return " OR ".join(
        f"(tenant = {escape_literal(t)} AND doc_id IN ({', '.join(escape_literal(d) for d in ids)}))"
        for t, ids in sorted(by_tenant.items())
    ) or "false"


def _listing(versions: list[int]) -> str:
    return ", ".join(map(str, versions)) if len(versions) <= 12 else f"{versions[0]} ... {versions[-1]}"


def _hit(row: dict[str, Any], score: float, vector: Any = None, sentence_vectors: Any = None) -> SearchHit:
    """A hit from a row; a hybrid candidate's row holds only what its fusion needs (:func:`_candidate_columns`)."""
    return SearchHit(row.get("chunk_id", ""), row.get("doc_id", ""), score, row.get("text", ""),
                     json.loads(row.get("metadata") or "{}"), vector, sentence_vectors)


def _candidate_columns(fusion: Fusion, dataset: Any) -> list[str]:
    """What a hybrid search reads of its ~50 candidates per ranking besides row ids and scores: only what
    ``fusion`` scores with (doc id or title for document-level fusion, text and sentence vectors for sentence
    evidence); nothing for plain rank or score fusion. The best are completed afterwards (:func:`_completed`)."""
    needed = []
    if fusion.doc_weight > 0:
        needed += ["doc_id", "metadata"] if fusion.doc_key == "title" else ["doc_id"]
    if fusion.coverage_weight > 0:
        needed.append("text")
    if fusion.sentence_weight > 0 and SENTENCES in dataset.schema.names:  # (reading the schema costs ~0.1 ms)
        needed.append(SENTENCES)
    return needed


def _read_columns(extra: bool | list[str], row_ids: bool, score: str) -> list[str]:
    return [*(extra if row_ids else [*_RESULT_COLUMNS, *_extra(extra)]), score]  # type: ignore[misc]


def _scored(table: Any, extra: bool | list[str], row_ids: bool, score: Callable[[dict[str, Any]], float]) -> Any:
    """The hits of one ranking's result table; with ``row_ids``, ``(hit, row id)`` pairs."""
    extra = _extra(extra)
    hits = [_hit(row, score(row), *stored) for row, *stored in _rows(table, extra)]
    if not row_ids:
        return hits
    return list(zip(hits, table.column("_rowid").to_pylist(), strict=True))


def _keyed(pairs: list[tuple[SearchHit, int]], row_of: dict[str, int]) -> list[SearchHit]:
    """A ranking's candidates keyed for fusion by row id (their chunk ids are not read yet)."""
    out = []
    for hit, row_id in pairs:
        key = f"row:{row_id}"
        row_of[key] = row_id
        out.append(replace(hit, chunk_id=key))
    return out


def _at_least_kth(scores: dict[str, float], k: int) -> list[str]:
    """The keys scoring at least the ``k``-th best score (``k`` of them, more when tied at the boundary)."""
    if len(scores) <= k:
        return list(scores)
    kth = sorted(scores.values(), reverse=True)[k - 1]
    return [key for key, score in scores.items() if score >= kth]


def _completed(dataset: Any, hits: list[SearchHit], row_ids: list[int], with_vectors: bool) -> list[SearchHit]:
    """``hits`` (fused candidates) with their whole rows (chunk and doc id, text, metadata, and the stored vector
    when asked) read by row id from the same dataset version; scores and sentence vectors are kept."""
    if not hits:
        return []
    extra = _VECTOR_COLUMNS[with_vectors]
    table = _take(dataset, row_ids, [*_RESULT_COLUMNS, *extra])
    rows = {row["_rowid"]: (row, vector) for row, vector, _ in _rows(table, extra)}
    return [_hit(rows[r][0], h.score, rows[r][1], h.sentence_vectors) for h, r in zip(hits, row_ids, strict=True)]


def _take(dataset: Any, row_ids: list[int], columns: list[str]) -> Any:
    """Rows by row id (pylance's ``_take_rows``: half the CPU of a ``_rowid IN`` scan; the scan where a
    pylance lacks it)."""
    take_rows = getattr(dataset, "_take_rows", None)
    if take_rows is not None:
        return take_rows(row_ids, columns=[*columns, "_rowid"])
    return dataset.to_table(columns=columns, with_row_id=True, filter=f"_rowid IN ({', '.join(map(str, row_ids))})")


def _extra(extra: bool | list[str]) -> list[str]:
    return _VECTOR_COLUMNS[extra] if isinstance(extra, bool) else extra


def _rows(table: Any, extra: list[str]) -> Iterable[tuple[dict[str, Any], Any, Any]]:
    """``(row, stored vector or None, sentence vectors or None)`` per result row; vectors as numpy rows (never
    lists of floats)."""
    n = table.num_rows
    vectors: Any = [None] * n
    sentences: Any = [None] * n
    if n and "embedding" in extra:
        column = table.column("embedding").combine_chunks()
        vectors = column.flatten().to_numpy(zero_copy_only=False).reshape(len(column), -1)
    if n and SENTENCES in extra:
        sentences = _sentence_matrices(table.column(SENTENCES).combine_chunks())
    rest = table.drop_columns([c for c in ("embedding", SENTENCES) if c in extra])
    return zip(rest.to_pylist(), vectors, sentences, strict=True)


def _sentence_matrices(column: Any) -> list[Any]:
    """One ``(sentences, dim)`` float32 matrix per row of a list<fixed_size_list> column (None where null)."""

    if len(column) == 0:
        return []
    inner = column.flatten()  # fixed_size_list rows of every chunk, in order (nulls contribute none)
    flat = inner.flatten().to_numpy(zero_copy_only=False).reshape(len(inner), -1) if len(inner) else None
    offsets = column.offsets.to_numpy()
    return [None if not column[i].is_valid else flat[offsets[i] - offsets[0]:offsets[i + 1] - offsets[0]]
            for i in range(len(column))]


def published_embedder(db: Any, name: str) -> dict[str, Any]:
    """The embedder record of ``name``'s newest published version (of its newest commit while none is
    published): what readers must embed queries with, even while a re-embed's commit awaits publishing."""
    published = history.published_versions(db, table_name(name))
    if published:
        return _recorded_embedder(db.open_table(table_name(name), version=published[-1]))
    return _recorded_embedder(db.open_table(table_name(name)))


def _recorded_embedder(table: Any) -> dict[str, Any]:
    raw = (table.schema.metadata or {}).get(EMBEDDER_KEY)
    if raw is None:
        raise NotFoundError(
            f"table {table.name!r} has no embedder record; it was not written by llmfti",
            fix="rebuild the index with llmfti index build",
        )
    return json.loads(raw)


def _mismatch(index: str, recorded: dict[str, Any], configured: Any) -> EmbedderMismatchError:
    return EmbedderMismatchError(
        f"index {index!r} was built with embedder {recorded} but this process is configured with {configured}",
        expected=f"embedder.model = {recorded['name']!r} (same tokenizer and dimension)",
        fix="set embedder.model back, or rebuild into a new index name with the new embedder",
    )
