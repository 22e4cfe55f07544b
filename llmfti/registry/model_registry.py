"""The model registry: model versions, eval runs and alias history in LanceDB, artifacts beside them.

Layout under the storage root (``storage.uri``: a local folder, default ``data_dir``, or s3:// gs:// az://)::

    lancedb/registry_model_versions   one row per ModelVersion (lineage, hyper-parameters, metrics);
                                      key (name, version)
    lancedb/registry_eval_runs        append-only: eval runs recorded against a version
    lancedb/registry_alias_events     append-only: every promote / rollback of an alias; key (name, seq)
    registry/<model>/<registration>/  adapter/, tokenizer/ (pinned), model_card.md, training files and a
                                      manifest (sizes + SHA-256, written last: the folder is complete)

On an object store, :meth:`ModelRegistry.fetch` downloads a version's artifacts once into
``data_dir/cache/registry/<model>/<registration>/`` (checked against the manifest) for loading.

Several writers (processes, machines) are safe without any lock: artifacts are uploaded to a folder
no other registration uses, and only then is the version number claimed by an insert-if-absent on
the key (name, version) (:func:`llmfti.lance.insert_if_absent`: Lance detects the conflicting
commit, so of two registrations racing for one number exactly one gets it and the other takes the
next). Alias moves claim the next event number the same way after checking the state they read (gate,
current version); a writer that loses the race re-reads and re-checks. Eval runs are plain appends.
A crash leaves at most an unreferenced artifact folder, never a row without artifacts.

An alias is a stack replayed from its events: ``promote`` pushes a version, ``rollback`` pops
back to the one before. The agent serves ``resolve("production")``, and the index version it
serves comes from that same ModelVersion, so a rollback moves model and index together.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmfti.errors import InvalidInputError, NotFoundError, PromotionRefusedError, StoreUnavailableError
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
CLAIM_ATTEMPTS = 50  # concurrent writers that beat this one to a version or event number, before giving up


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
        self.gated_aliases = set(settings.registry.gated_aliases)
        from llmfti.storage import ArtifactStore

        self.store = ArtifactStore(settings)
        self.cache = Path(settings.data_dir) / "cache" / "registry" / self.model_name

    # -- storage ---------------------------------------------------------------------------------

    def _table(self, name: str, schema: Any):  # noqa: ANN202 - lancedb imported lazily
        from llmfti.lance import connect, open_or_create_table

        db = connect(self.settings)  # opened as stored: tables from before a column was added still open
        return _with_primary_key(db, name, open_or_create_table(db, name, schema), schema)

    def _rows(self, name: str, schema: Any) -> list[dict[str, Any]]:
        table = self._table(name, schema)
        return [r for r in table.to_arrow().to_pylist() if r["name"] == self.model_name]

    def _claims(self, what: str) -> Iterator[int]:
        """Attempts at an optimistic claim; raises once CLAIM_ATTEMPTS concurrent writers won instead."""
        for attempt in range(CLAIM_ATTEMPTS):
            if attempt:
                time.sleep(random.uniform(0.005, 0.02 * min(attempt, 10)))
            yield attempt
        raise StoreUnavailableError(
            f"gave up claiming {what} of model {self.model_name!r}: {CLAIM_ATTEMPTS} concurrent writers claimed "
            "it first", fix="retry; if it persists, fewer processes should write this registry at once")

    def _local_dir(self, location: str) -> Path | None:
        """Where a version stored at ``location`` is cached locally (None: it is a local folder already)."""
        from llmfti.storage import is_object_store

        return self.cache / location.rstrip("/").rsplit("/", 1)[-1] if is_object_store(location) else None

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
        if not any((adapter_dir / f).is_file() for f in ("adapter_config.json", "modules.json")):
            raise NotFoundError(
                f"{adapter_dir} holds no adapter_config.json (nor modules.json)",
                expected="a folder written by peft's save_pretrained (or, for an embedder version, a "
                         "sentence-transformers model saved by SentenceTransformer.save)",
                fix="point adapter_dir at the training run's adapter/ folder",
            )
        if index_version is not None and index_name is None:
            raise InvalidInputError("index_version given without index_name", expected="both or neither",
                                    fix="pass the index name the version belongs to")
        from llmfti.lance import insert_if_absent

        registration = f"{_now():%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
        location = self.store.location("registry", self.model_name, registration)
        local_dir = self._local_dir(location)
        scratch = (self.cache if self.store.remote else Path(location).parent) / f".incoming-{registration}"
        scratch.mkdir(parents=True)
        staging = scratch / "artifacts"
        claimed = False
        try:
            shutil.copytree(adapter_dir, staging / ADAPTER_DIR)
            tokenizer.save(staging / TOKENIZER_DIR)
            for name, src in (extra_files or {}).items():
                if Path(name).name != name or name.startswith(".") or name in (ADAPTER_DIR, TOKENIZER_DIR):
                    raise InvalidInputError(f"artifact file name {name!r} is not allowed",
                                            expected="a plain file name such as 'train_config.json'",
                                            fix="give extra files plain names")
                shutil.copy2(src, staging / name)
            self.store.put(staging, location)  # complete before any row points at it
            if local_dir is not None:
                staging.rename(local_dir)  # the registering process has the cache copy already
            table = self._table(VERSIONS_TABLE, version_schema())
            for _attempt in self._claims("a version number"):
                existing = [r["version"] for r in self._rows(VERSIONS_TABLE, version_schema())]
                mv = ModelVersion(
                    name=self.model_name,
                    version=max(existing, default=0) + 1,
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
                    artifact_dir=local_dir if local_dir is not None else Path(location).resolve(),
                    artifact_uri=location if local_dir is not None else None,
                )
                if insert_if_absent(table, ["name", "version"], mv.to_row(), table.schema):
                    claimed = True
                    break
            self._write_card(mv)
            return mv
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
            if not claimed:  # nothing points at these artifacts: remove them
                self.store.delete(location)
                if local_dir is not None:
                    shutil.rmtree(local_dir, ignore_errors=True)

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
                                  aliases=tuple(sorted(by_version.get(r["version"], ()))),
                                  local_dir=self._local_dir(r["artifact_dir"]))
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

    def fetch(self, mv: ModelVersion) -> ModelVersion:
        """``mv`` with its artifacts in ``mv.artifact_dir`` locally: downloaded from an object store once
        (checked against the stored manifest; downloaded again if the cached copy differs or lost a file);
        a no-op for local storage. Call it before loading ``mv.adapter_dir`` / ``mv.tokenizer_dir``."""
        from llmfti.storage import MANIFEST

        if mv.artifact_uri is None:
            return mv
        stored = self.store.read_text(mv.artifact_uri, MANIFEST)
        if stored is None:
            raise NotFoundError(f"{mv.ref}: no complete artifacts at {mv.artifact_uri}",
                                expected="adapter/ and tokenizer/ uploaded with a manifest",
                                fix="re-register the version; its upload did not complete")
        if not self.store.is_copy(mv.artifact_dir, stored):
            mv.artifact_dir.parent.mkdir(parents=True, exist_ok=True)
            self.store.download(mv.artifact_uri, mv.artifact_dir)
        card = self.store.read_text(mv.artifact_uri, MODEL_CARD_FILE)
        if card is not None:
            (mv.artifact_dir / MODEL_CARD_FILE).write_text(card, encoding="utf-8")
        return mv

    # -- evals -----------------------------------------------------------------------------------

    def _eval_runs(self) -> dict[int, list[EvalRun]]:
        out: dict[int, list[EvalRun]] = {}
        for r in self._rows(EVALS_TABLE, eval_schema()):
            out.setdefault(r["version"], []).append(
                EvalRun(run_id=r["run_id"], passed=r["passed"], metrics=json.loads(r["metrics"]),
                        recorded_at=r["recorded_at"]))
        return out

    def record_eval(self, version: int | str, run_id: str, passed: bool,
                    metrics: dict[str, Any] | None = None, *, suite: str | None = None) -> EvalRun:
        """Record a run of eval ``suite`` for ``version`` (called by ``llmfti eval --model-version``); the
        latest run of each suite in ``registry.gate_suites`` gates promotion (the suite is kept as metrics["suite"])."""
        mv = self.get(version)
        if not isinstance(run_id, str) or not run_id.strip():
            raise InvalidInputError("run_id is empty", expected="the eval run's id", fix="pass the run id")
        metrics = {**(metrics or {}), **({"suite": suite} if suite else {})}
        run = EvalRun(run_id=run_id, passed=bool(passed), metrics=metrics, recorded_at=_now())
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

    def _stacks(self, events: list[AliasEvent] | None = None) -> dict[str, list[int]]:
        stacks: dict[str, list[int]] = {}
        for event in self._alias_events() if events is None else events:
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

    def _append_event(self, seq: int, alias: str, version: int, action: str, from_version: int | None,
                      reason: str | None, actor: str | None = None) -> AliasEvent | None:
        """Append event number ``seq`` (the count of events the caller based its decision on), or None if
        another writer appended that event first: the caller then re-reads the state and decides again."""
        from llmfti.lance import insert_if_absent

        event = AliasEvent(alias=alias, version=version, action=action, from_version=from_version,
                           reason=reason, at=_now(), actor=actor or _whoami())
        table = self._table(ALIASES_TABLE, alias_schema())
        if "actor" not in table.schema.names:  # a registry from before alias moves recorded who
            table.add_columns({"actor": "CAST(NULL AS STRING)"})
        row = {"name": self.model_name, "alias": alias, "version": version, "action": action,
               "from_version": from_version, "reason": reason, "at": event.at, "seq": seq, "actor": event.actor}
        return event if insert_if_absent(table, ["name", "seq"], row, table.schema) else None

    def promote(self, version: int | str, alias: str = "production", *, reason: str | None = None,
                actor: str | None = None) -> AliasEvent:
        """Point ``alias`` at ``version``. Gated aliases need the version's latest eval run to have passed."""
        check_name(alias, what="alias")
        for _attempt in self._claims(f"a move of alias {alias!r}"):  # re-checked if another move won
            mv = self.get(version)
            if alias in self.gated_aliases:
                for suite in self.settings.registry.gate_suites:
                    runs = [r for r in mv.eval_runs if r.metrics.get("suite") == suite]
                    latest = max(runs, key=lambda r: r.recorded_at) if runs else None
                    if latest is None or not latest.passed:
                        got = (f"no run of eval suite {suite!r} recorded" if latest is None
                               else f"its latest run of eval suite {suite!r} ({latest.run_id}) failed")
                        raise PromotionRefusedError(
                            f"cannot promote {mv.ref} to {alias!r}: {got}",
                            expected=f"a passing run of each gate suite {self.settings.registry.gate_suites} "
                                     f"recorded for {mv.ref} (alias {alias!r} is gated)",
                            fix=f"llmfti eval --suite {suite} --model-version {mv.version}, then promote again",
                        )
            events = self._alias_events()  # one read: the decision and its sequence number agree
            stack = self._stacks(events).get(alias, [])
            current = stack[-1] if stack else None
            if current == mv.version:
                raise PromotionRefusedError(f"{alias!r} already points at {mv.ref}", expected="another version",
                                            fix="nothing to do, or promote a different version")
            event = self._append_event(len(events), alias, mv.version, "promote", current, reason, actor)
            if event is not None:
                break
        self._write_card(self.get(mv.version))
        return event

    def rollback(self, alias: str = "production", *, reason: str | None = None,
                 actor: str | None = None) -> AliasEvent:
        """Move ``alias`` back to the version it pointed at before the current one."""
        check_name(alias, what="alias")
        for _attempt in self._claims(f"a move of alias {alias!r}"):  # re-checked if another move won
            events = self._alias_events()  # one read: the decision and its sequence number agree
            stack = self._stacks(events).get(alias, [])
            if len(stack) < 2:
                raise PromotionRefusedError(
                    f"alias {alias!r} of model {self.model_name!r} has no earlier version to roll back to "
                    f"(history: {stack or 'empty'})",
                    expected="an alias promoted at least twice",
                    fix=f"promote another version instead: `llmfti registry promote VERSION --alias {alias}`",
                )
            event = self._append_event(len(events), alias, stack[-2], "rollback", stack[-1], reason, actor)
            if event is not None:
                break
        for version in (stack[-1], stack[-2]):
            self._write_card(self.get(version))
        return event

    def _write_card(self, mv: ModelVersion) -> None:
        if mv.artifact_uri is not None:
            self.store.write_text(mv.artifact_uri, MODEL_CARD_FILE, mv.model_card)
        if mv.artifact_dir.is_dir():
            (mv.artifact_dir / MODEL_CARD_FILE).write_text(mv.model_card, encoding="utf-8")


def _with_primary_key(db: Any, name: str, table: Any, schema: Any) -> Any:
    """``table``, rewritten once if it was created before its key columns carried the primary-key marker.

    Run the first command of a new llmfti with no other writer on the registry: the rewrite is one
    overwrite commit (a concurrent write makes it fail with a commit conflict, nothing is lost).
    """
    import pyarrow as pa

    from llmfti.lance import PRIMARY_KEY_METADATA

    marker = next(iter(PRIMARY_KEY_METADATA)).encode()
    keys = [f.name for f in schema if f.metadata and marker in f.metadata]
    stored = table.schema
    if all(k not in stored.names or (stored.field(k).metadata and marker in stored.field(k).metadata)
           for k in keys):
        return table
    fields = [schema.field(f.name) if f.name in keys else f for f in stored]
    data = table.to_arrow().cast(pa.schema(fields))
    return db.create_table(name, data=data, schema=pa.schema(fields), mode="overwrite")
