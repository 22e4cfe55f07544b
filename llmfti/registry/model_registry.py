"""The model registry: model versions, eval runs and alias history in LanceDB, artifacts on disk.

Layout under ``data_dir``::

    lancedb/registry_model_versions   one row per ModelVersion (lineage, hyper-parameters, metrics)
    lancedb/registry_eval_runs        append-only: eval runs recorded against a version
    lancedb/registry_alias_events     append-only: every promote / rollback of an alias
    registry/<model>/v<N>/            adapter/, tokenizer/ (pinned), model_card.md, training files

An alias is a stack replayed from its events: ``promote`` pushes a version, ``rollback`` pops
back to the one before. The agent serves ``resolve("production")``, and the index version it
serves comes from that same ModelVersion, so a rollback moves model and index together.
"""

from __future__ import annotations

import fcntl
import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmfti.errors import InvalidInputError, NotFoundError, PromotionRefusedError
from llmfti.naming import check_name
from llmfti.registry.model_version import (
    ADAPTER_DIR,
    MODEL_CARD_FILE,
    TOKENIZER_DIR,
    AliasEvent,
    EvalRun,
    ModelVersion,
    alias_schema,
    eval_schema,
    version_schema,
)

if TYPE_CHECKING:
    from llmfti.config import Settings
    from llmfti.llm.tokenization import PinnedTokenizer

VERSIONS_TABLE = "registry_model_versions"
EVALS_TABLE = "registry_eval_runs"
ALIASES_TABLE = "registry_alias_events"


def _now() -> datetime:
    return datetime.now(UTC)


def _whoami() -> str:
    """Who moves an alias when the caller names nobody: the OS user of this process."""
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def current_git_commit(cwd: Path | None = None) -> str | None:
    """HEAD of the repository the process runs in (``-dirty`` if it has uncommitted changes)."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                              timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("-dirty" if dirty else "")


class ModelRegistry:
    """Register, look up, evaluate, promote and roll back the versions of one model name."""

    def __init__(self, settings: Settings, model_name: str | None = None):
        self.settings = settings
        self.model_name = check_name(model_name or settings.registry.model_name, what="model name")
        self.root = Path(settings.data_dir) / "registry" / self.model_name
        self.gated_aliases = set(settings.registry.gated_aliases)

    # -- storage ---------------------------------------------------------------------------------

    def _table(self, name: str, schema: Any):  # noqa: ANN202 - lancedb imported lazily
        from llmfti.lance import connect, table_names

        db = connect(self.settings)
        if name in table_names(db):  # opened as stored: tables from before a column was added still open
            return db.open_table(name)
        return db.create_table(name, schema=schema, exist_ok=True)

    def _rows(self, name: str, schema: Any) -> list[dict[str, Any]]:
        table = self._table(name, schema)
        return [r for r in table.to_arrow().to_pylist() if r["name"] == self.model_name]

    @contextmanager
    def _lock(self) -> Iterator[None]:
        """Serialise writers on this machine (version numbers, alias moves)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # -- versions --------------------------------------------------------------------------------

    def register(
        self,
        *,
        adapter_dir: Path,
        tokenizer: PinnedTokenizer,
        base_model: str,
        training_dataset_id: str,
        data_versions: dict[str, Any] | None = None,
        index_name: str | None = None,
        index_version: int | None = None,
        embedder: str | None = None,
        hyperparameters: dict[str, Any] | None = None,
        metrics: dict[str, Any] | None = None,
        base_model_revision: str | None = None,
        extra_files: dict[str, Path] | None = None,
        git_commit: str | None = None,
    ) -> ModelVersion:
        """Copy the adapter and the pinned tokenizer into a new version folder and record it."""
        adapter_dir = Path(adapter_dir)
        if not (adapter_dir / "adapter_config.json").is_file():
            raise NotFoundError(
                f"{adapter_dir} holds no adapter_config.json",
                expected="a folder written by peft's save_pretrained",
                fix="point adapter_dir at the training run's adapter/ folder",
            )
        if index_version is not None and index_name is None:
            raise InvalidInputError("index_version given without index_name", expected="both or neither",
                                    fix="pass the index name the version belongs to")
        self.root.mkdir(parents=True, exist_ok=True)
        staging = self.root / f".incoming-{uuid.uuid4().hex}"
        try:
            shutil.copytree(adapter_dir, staging / ADAPTER_DIR)
            tokenizer.save(staging / TOKENIZER_DIR)
            for name, src in (extra_files or {}).items():
                if Path(name).name != name or name.startswith(".") or name in (ADAPTER_DIR, TOKENIZER_DIR):
                    raise InvalidInputError(f"artifact file name {name!r} is not allowed",
                                            expected="a plain file name such as 'train_config.json'",
                                            fix="give extra files plain names")
                shutil.copy2(src, staging / name)
            with self._lock():
                existing = [r["version"] for r in self._rows(VERSIONS_TABLE, version_schema())]
                number = max(existing, default=0) + 1
                final = self.root / f"v{number}"
                if final.exists():  # a crashed registration left a folder but no row
                    shutil.rmtree(final)
                staging.rename(final)
                mv = ModelVersion(
                    name=self.model_name,
                    version=number,
                    base_model=base_model,
                    base_model_revision=base_model_revision,
                    tokenizer_fingerprint=tokenizer.fingerprint,
                    training_dataset_id=training_dataset_id,
                    data_versions=data_versions or {},
                    index_name=index_name,
                    index_version=index_version,
                    embedder=embedder,
                    hyperparameters=hyperparameters or {},
                    metrics=metrics or {},
                    created_at=_now(),
                    git_commit=git_commit if git_commit is not None else current_git_commit(),
                    artifact_dir=final.resolve(),
                )
                try:
                    self._table(VERSIONS_TABLE, version_schema()).add([mv.to_row()])
                except Exception:
                    shutil.rmtree(final, ignore_errors=True)
                    raise
            self._write_card(mv)
            return mv
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def versions(self) -> list[ModelVersion]:
        """All versions of this model, oldest first, with their eval runs and current aliases."""
        evals = self._eval_runs()
        aliases = self.aliases()
        by_version: dict[int, list[str]] = {}
        for alias, version in aliases.items():
            by_version.setdefault(version, []).append(alias)
        rows = sorted(self._rows(VERSIONS_TABLE, version_schema()), key=lambda r: r["version"])
        return [
            ModelVersion.from_row(r, eval_runs=tuple(evals.get(r["version"], ())),
                                  aliases=tuple(sorted(by_version.get(r["version"], ()))))
            for r in rows
        ]

    def get(self, ref: int | str) -> ModelVersion:
        """A version by number (``3``, ``"3"``, ``"v3"``) or by alias (``"production"``)."""
        if isinstance(ref, str) and not ref.lstrip("v").isdigit():
            return self.resolve(ref)
        number = int(ref.lstrip("v")) if isinstance(ref, str) else int(ref)
        for mv in self.versions():
            if mv.version == number:
                return mv
        raise NotFoundError(
            f"model {self.model_name!r} has no version {number}",
            expected=f"one of {[m.version for m in self.versions()] or 'none registered yet'}",
            fix="list versions with `llmfti registry list`",
        )

    # -- evals -----------------------------------------------------------------------------------

    def _eval_runs(self) -> dict[int, list[EvalRun]]:
        out: dict[int, list[EvalRun]] = {}
        for r in self._rows(EVALS_TABLE, eval_schema()):
            out.setdefault(r["version"], []).append(
                EvalRun(run_id=r["run_id"], passed=r["passed"], metrics=json.loads(r["metrics"]),
                        recorded_at=r["recorded_at"]))
        return out

    def record_eval(self, version: int | str, run_id: str, passed: bool,
                    metrics: dict[str, Any] | None = None) -> EvalRun:
        """Record an eval suite run for ``version`` (called by the eval suite). The latest run gates promotion."""
        mv = self.get(version)
        if not isinstance(run_id, str) or not run_id.strip():
            raise InvalidInputError("run_id is empty", expected="the eval run's id", fix="pass the run id")
        run = EvalRun(run_id=run_id, passed=bool(passed), metrics=dict(metrics or {}), recorded_at=_now())
        self._table(EVALS_TABLE, eval_schema()).add([{
            "name": self.model_name, "version": mv.version, "run_id": run.run_id, "passed": run.passed,
            "metrics": json.dumps(run.metrics, sort_keys=True, default=str), "recorded_at": run.recorded_at,
        }])
        self._write_card(self.get(mv.version))
        return run

    # -- aliases ---------------------------------------------------------------------------------

    def _alias_events(self) -> list[AliasEvent]:
        rows = sorted(self._rows(ALIASES_TABLE, alias_schema()), key=lambda r: r["seq"])
        return [AliasEvent(alias=r["alias"], version=r["version"], action=r["action"],
                           from_version=r["from_version"], reason=r["reason"], at=r["at"],
                           actor=r.get("actor")) for r in rows]

    def _stacks(self) -> dict[str, list[int]]:
        stacks: dict[str, list[int]] = {}
        for event in self._alias_events():
            stack = stacks.setdefault(event.alias, [])
            if event.action == "promote":
                stack.append(event.version)
            else:
                stack.pop()
        return stacks

    def aliases(self) -> dict[str, int]:
        """Current version of every alias that points somewhere."""
        return {alias: stack[-1] for alias, stack in self._stacks().items() if stack}

    def alias_history(self, alias: str | None = None) -> list[AliasEvent]:
        events = self._alias_events()
        return [e for e in events if alias is None or e.alias == alias]

    def resolve(self, alias: str) -> ModelVersion:
        """The version ``alias`` points at (its ``index_name``/``index_version`` are what to serve)."""
        current = self.aliases().get(alias)
        if current is None:
            raise NotFoundError(
                f"alias {alias!r} of model {self.model_name!r} points at no version",
                expected=f"one of the set aliases {sorted(self.aliases()) or '(none set yet)'}",
                fix=f"promote a version first: `llmfti registry promote VERSION --alias {alias}`",
            )
        return self.get(current)

    def _append_event(self, alias: str, version: int, action: str, from_version: int | None,
                      reason: str | None, actor: str | None = None) -> AliasEvent:
        seq = len(self._rows(ALIASES_TABLE, alias_schema()))
        event = AliasEvent(alias=alias, version=version, action=action, from_version=from_version,
                           reason=reason, at=_now(), actor=actor or _whoami())
        table = self._table(ALIASES_TABLE, alias_schema())
        if "actor" not in table.schema.names:  # a registry from before alias moves recorded who
            table.add_columns({"actor": "CAST(NULL AS STRING)"})
        table.add([{
            "name": self.model_name, "alias": alias, "version": version, "action": action,
            "from_version": from_version, "reason": reason, "at": event.at, "seq": seq, "actor": event.actor,
        }])
        return event

    def promote(self, version: int | str, alias: str = "production", *, reason: str | None = None,
                actor: str | None = None) -> AliasEvent:
        """Point ``alias`` at ``version``. Gated aliases need the version's latest eval run to have passed."""
        check_name(alias, what="alias")
        with self._lock():
            mv = self.get(version)
            if alias in self.gated_aliases:
                latest = mv.latest_eval
                if latest is None or not latest.passed:
                    got = "no eval run recorded" if latest is None else f"latest eval run {latest.run_id!r} failed"
                    raise PromotionRefusedError(
                        f"cannot promote {mv.ref} to {alias!r}: {got}",
                        expected=f"a passing eval run recorded for {mv.ref} (alias {alias!r} is gated)",
                        fix="run the eval suite against this version and record it "
                        "(ModelRegistry.record_eval), then promote again",
                    )
            current = self.aliases().get(alias)
            if current == mv.version:
                raise PromotionRefusedError(f"{alias!r} already points at {mv.ref}", expected="another version",
                                            fix="nothing to do, or promote a different version")
            event = self._append_event(alias, mv.version, "promote", current, reason, actor)
        self._write_card(self.get(mv.version))
        return event

    def rollback(self, alias: str = "production", *, reason: str | None = None,
                 actor: str | None = None) -> AliasEvent:
        """Move ``alias`` back to the version it pointed at before the current one."""
        check_name(alias, what="alias")
        with self._lock():
            stack = self._stacks().get(alias, [])
            if len(stack) < 2:
                raise PromotionRefusedError(
                    f"alias {alias!r} of model {self.model_name!r} has no earlier version to roll back to "
                    f"(history: {stack or 'empty'})",
                    expected="an alias promoted at least twice",
                    fix=f"promote another version instead: `llmfti registry promote VERSION --alias {alias}`",
                )
            event = self._append_event(alias, stack[-2], "rollback", stack[-1], reason, actor)
        for version in (stack[-1], stack[-2]):
            self._write_card(self.get(version))
        return event

    def _write_card(self, mv: ModelVersion) -> None:
        if mv.artifact_dir.is_dir():
            (mv.artifact_dir / MODEL_CARD_FILE).write_text(mv.model_card, encoding="utf-8")
