"""What the registry records about one trained model, one eval run and one alias move."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

ADAPTER_DIR = "adapter"
TOKENIZER_DIR = "tokenizer"
MODEL_CARD_FILE = "model_card.md"


@dataclass(frozen=True)
class EvalRun:
    """One eval suite run against a model version (recorded by the eval suite)."""

    run_id: str
    passed: bool
    metrics: dict[str, Any]
    recorded_at: datetime


@dataclass(frozen=True)
class AliasEvent:
    """One move of an alias: ``promote`` pushes a version, ``rollback`` returns to the previous one."""

    alias: str
    version: int
    action: str
    from_version: int | None
    reason: str | None
    at: datetime
    actor: str | None = None  # who moved it (None in registries from before this was recorded)


@dataclass(frozen=True)
class ModelVersion:
    """A registered fine-tuned model: enough to serve it exactly as trained, or roll back to it."""

    name: str
    version: int
    base_model: str
    base_model_revision: str | None
    tokenizer_fingerprint: str
    training_dataset_id: str
    data_versions: dict[str, Any]
    index_name: str | None
    index_version: int | None
    embedder: str | None
    hyperparameters: dict[str, Any]
    metrics: dict[str, Any]
    created_at: datetime
    git_commit: str | None
    artifact_dir: Path
    eval_runs: tuple[EvalRun, ...] = ()
    aliases: tuple[str, ...] = field(default=())
    artifact_uri: str | None = None  # where the artifacts are stored, when not artifact_dir (object storage)

    @property
    def ref(self) -> str:
        return f"{self.name}:v{self.version}"

    @property
    def adapter_dir(self) -> Path:
        return self.artifact_dir / ADAPTER_DIR

    @property
    def tokenizer_dir(self) -> Path:
        return self.artifact_dir / TOKENIZER_DIR

    @property
    def adapter_files(self) -> list[str]:
        if not self.adapter_dir.is_dir():
            return []
        return sorted(str(p.relative_to(self.artifact_dir)) for p in self.adapter_dir.rglob("*") if p.is_file())

    @property
    def artifact_location(self) -> str:
        """Where the artifacts are stored: an object-store URI, or the local folder itself."""
        return self.artifact_uri or str(self.artifact_dir)

    @property
    def latest_eval(self) -> EvalRun | None:
        return max(self.eval_runs, key=lambda r: r.recorded_at) if self.eval_runs else None

    @property
    def model_card(self) -> str:
        from llmfti.registry.model_card import render_model_card

        return render_model_card(self)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["artifact_dir"] = str(self.artifact_dir)
        out["artifact_uri"] = self.artifact_location
        out["ref"] = self.ref
        out["adapter_files"] = self.adapter_files
        out["eval_runs"] = [asdict(r) for r in self.eval_runs]
        out["aliases"] = list(self.aliases)
        return out

    def to_row(self) -> dict[str, Any]:
        """The LanceDB row (nested values as JSON text; evals and aliases live in their own tables)."""
        return {
            "name": self.name,
            "version": self.version,
            "base_model": self.base_model,
            "base_model_revision": self.base_model_revision,
            "tokenizer_fingerprint": self.tokenizer_fingerprint,
            "training_dataset_id": self.training_dataset_id,
            "data_versions": json.dumps(self.data_versions, sort_keys=True, default=str),
            "index_name": self.index_name,
            "index_version": self.index_version,
            "embedder": self.embedder,
            "hyperparameters": json.dumps(self.hyperparameters, sort_keys=True, default=str),
            "metrics": json.dumps(self.metrics, sort_keys=True, default=str),
            "model_card": self.model_card,
            "created_at": self.created_at,
            "git_commit": self.git_commit,
            "artifact_dir": self.artifact_location,
        }

    @classmethod
    def from_row(cls, row: dict[str, Any], *, eval_runs: tuple[EvalRun, ...] = (),
                 aliases: tuple[str, ...] = (), local_dir: Path | None = None) -> ModelVersion:
        """The version of a row; ``local_dir``: where its stored artifacts are (or will be) cached locally."""
        stored = row["artifact_dir"]
        return cls(
            name=row["name"],
            version=int(row["version"]),
            base_model=row["base_model"],
            base_model_revision=row["base_model_revision"],
            tokenizer_fingerprint=row["tokenizer_fingerprint"],
            training_dataset_id=row["training_dataset_id"],
            data_versions=json.loads(row["data_versions"]),
            index_name=row["index_name"],
            index_version=None if row["index_version"] is None else int(row["index_version"]),
            embedder=row["embedder"],
            hyperparameters=json.loads(row["hyperparameters"]),
            metrics=json.loads(row["metrics"]),
            created_at=row["created_at"],
            git_commit=row["git_commit"],
            artifact_dir=local_dir if local_dir is not None else Path(stored),
            eval_runs=eval_runs,
            aliases=aliases,
            artifact_uri=stored if local_dir is not None else None,
        )


def _key(name: str, type_: Any) -> Any:
    """A primary-key column: Lance detects two concurrent inserts of the same key (see llmfti.lance)."""
    import pyarrow as pa

    from llmfti.lance import PRIMARY_KEY_METADATA

    return pa.field(name, type_, nullable=False, metadata=PRIMARY_KEY_METADATA)


def version_schema():  # noqa: ANN201 - pyarrow imported lazily
    import pyarrow as pa

    return pa.schema([
        _key("name", pa.string()),
        _key("version", pa.int64()),
        ("base_model", pa.string()),
        ("base_model_revision", pa.string()),
        ("tokenizer_fingerprint", pa.string()),
        ("training_dataset_id", pa.string()),
        ("data_versions", pa.string()),
        ("index_name", pa.string()),
        ("index_version", pa.int64()),
        ("embedder", pa.string()),
        ("hyperparameters", pa.string()),
        ("metrics", pa.string()),
        ("model_card", pa.string()),
        ("created_at", pa.timestamp("us", tz="UTC")),
        ("git_commit", pa.string()),
        ("artifact_dir", pa.string()),
    ])


def eval_schema():  # noqa: ANN201
    import pyarrow as pa

    return pa.schema([
        ("name", pa.string()),
        ("version", pa.int64()),
        ("run_id", pa.string()),
        ("passed", pa.bool_()),
        ("metrics", pa.string()),
        ("recorded_at", pa.timestamp("us", tz="UTC")),
    ])


def alias_schema():  # noqa: ANN201
    import pyarrow as pa

    return pa.schema([
        _key("name", pa.string()),
        ("alias", pa.string()),
        ("version", pa.int64()),
        ("action", pa.string()),
        ("from_version", pa.int64()),
        ("reason", pa.string()),
        ("at", pa.timestamp("us", tz="UTC")),
        _key("seq", pa.int64()),
        ("actor", pa.string()),
    ])
