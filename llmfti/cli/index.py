"""``llmfti index ...`` and ``llmfti search``: build, version and query the vector index."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from llmfti.cli.output import JsonOption, console, emit, reporting_errors, stage_progress

app = typer.Typer(help="Build, version, tag and roll back the document vector index.", no_args_is_help=True)
IndexOption = typer.Option(None, "--index", help="Index name (default: setting index.name).")


def _settings():  # noqa: ANN202
    from llmfti.config import load_settings

    return load_settings()


@app.command("build")
def build(
    paths: list[Path] = typer.Argument(..., help="Files or folders: .md .txt .html .pdf .jsonl, SQuAD .json"),
    index: str | None = IndexOption,
    tenant: str | None = typer.Option(
        None, help="Build for this tenant only (documents naming another tenant are quarantined). Default: "
                   "ingest.default_tenant for documents that name no tenant, their own for those that do."),
    engine: str = typer.Option("local", "--engine", help="local (this process) or ray (Ray Data workers)."),
    ray_address: str | None = typer.Option(None, "--ray-address", help="Ray cluster (default: a local Ray)."),
    num_gpus: float = typer.Option(0.0, "--num-gpus", help="GPUs per embedding worker (--engine ray)."),
    workers: int | None = typer.Option(None, "--workers", help="Embedding workers (--engine ray; default: all)."),
    embedder: str | None = typer.Option(
        None, "--embedder", help="Embed with this embedder (default: setting embedder.model), e.g. a registry version "
                                 "registry:NAME@ALIAS or registry:NAME:vN; an index built with another one is "
                                 "re-embedded into a new version first."),
    as_json: bool = JsonOption,
) -> None:
    """Build the index, or rebuild it incrementally: only added or changed documents are embedded."""
    with reporting_errors(as_json):
        from pipelines.index_build import build_index

        settings = _settings()
        reembedded = None
        if embedder is not None:
            from pipelines.reembed_index import switch_embedder

            with stage_progress(not as_json) as update:
                settings, reembedded = switch_embedder(settings, embedder, paths, index, tenant=tenant,
                                                       on_progress=update)

        if engine != "local" or ray_address or num_gpus or workers is not None:
            from pipelines.index_build_ray import RayEngine, check_engine_options

            check_engine_options(engine, ray_address, num_gpus, workers)
            with RayEngine(workers, num_gpus, ray_address) as ray_engine, stage_progress(not as_json) as update:
                summary = build_index(settings, paths, index, tenant=tenant, on_progress=update, engine=ray_engine)
        else:
            with stage_progress(not as_json) as update:
                summary = build_index(settings, paths, index, tenant=tenant, on_progress=update)
        if reembedded is not None:
            summary["reembedded"] = reembedded
        emit(summary, as_json, _print_summary)


@app.command("versions")
def versions(index: str | None = IndexOption, as_json: bool = JsonOption) -> None:
    """List builds and rollbacks with time, row count, summary and tags."""
    with reporting_errors(as_json):
        from llmfti.index import VectorIndex

        idx = VectorIndex.open(_settings(), index)
        emit({"index": idx.name, "current_version": idx.version, "versions": idx.versions()}, as_json,
             _print_versions)


@app.command("tag")
def tag(
    name: str = typer.Argument(..., help="Tag name, e.g. release-1."),
    version: int | None = typer.Option(None, "--version", help="Version to tag (default: the latest)."),
    index: str | None = IndexOption,
    as_json: bool = JsonOption,
) -> None:
    """Give a version a name (moves the tag if it exists)."""
    with reporting_errors(as_json):
        from llmfti.index import VectorIndex

        idx = VectorIndex.open(_settings(), index)
        emit({"index": idx.name, "tag": name, "version": idx.tag(name, version)}, as_json,
             lambda r: console().print(f"index [bold]{r['index']}[/]: tag {r['tag']} -> version {r['version']}"))


@app.command("rollback")
def rollback(
    version: str = typer.Argument(..., help="Version number or tag to restore."),
    index: str | None = IndexOption,
    as_json: bool = JsonOption,
) -> None:
    """Make a past version the latest again (as a new version; nothing is lost)."""
    with reporting_errors(as_json):
        from llmfti.index import VectorIndex

        idx = VectorIndex.open(_settings(), index)
        restored = idx.resolve_version(version)
        emit({"index": idx.name, "restored_version": restored, "version": idx.rollback(restored)}, as_json,
             lambda r: console().print(f"index [bold]{r['index']}[/]: the content of version {r['restored_version']} "
                                       f"is now the latest, as version {r['version']} (nothing was deleted)"))


@app.command("quarantine")
def quarantine(index: str | None = IndexOption, as_json: bool = JsonOption) -> None:
    """Inputs that could not be indexed, with path, reason and time (newest last)."""
    with reporting_errors(as_json):
        from llmfti.index import history
        from llmfti.lance import connect

        settings = _settings()
        name = index or settings.index.name
        rows = sorted(history.quarantined(connect(settings), name), key=lambda r: r["at"])
        emit({"index": name, "quarantined": rows}, as_json, _print_quarantine)


@app.command("tune-fusion")
def tune_fusion(
    name: str = typer.Argument(..., help="Index whose hybrid fusion to tune."),
    questions: Path | None = typer.Option(
        None, "--questions", help='JSONL eval questions, one {"question": ..., "doc_ids": [...]} per line.'),
    suite: str | None = typer.Option(None, "--suite", help="Use an eval suite's questions instead, e.g. squad."),
    full: bool = typer.Option(False, "--full", help="With --suite: all its questions, not its seeded sample."),
    tenant: str | None = typer.Option(None, "--tenant", help="Tenant to search (default: ingest.default_tenant)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Report only; store nothing."),
    reset: bool = typer.Option(False, "--reset", help="Go back to plain RRF (index.rrf_k) in a new version."),
    as_json: bool = JsonOption,
) -> None:
    """Choose how hybrid search fuses dense and full-text results (method, k, weights, document-level fusion,
    sentence-level evidence) from the index's eval questions: tuned on half the documents, reported on the other
    half, stored as a new index version (rollback restores the earlier fusion)."""
    with reporting_errors(as_json):
        from llmfti.errors import InvalidInputError
        from llmfti.index import VectorIndex
        from llmfti.index.fusion_tuning import Question, tune_index

        if reset:
            if questions is not None or suite is not None or dry_run:
                raise InvalidInputError("--reset takes no questions and no --dry-run", fix="pass --reset alone")
            idx = VectorIndex.open(_settings(), name)
            version = idx.clear_fusion("llmfti index tune-fusion --reset")
            emit({"index": idx.name, "version": version, "fusion": idx.fusion(version).to_dict()}, as_json,
                 lambda r: console().print(f"index [bold]{r['index']}[/]: plain RRF from version {r['version']}"))
            return
        if (questions is None) == (suite is None):
            raise InvalidInputError("tune-fusion needs its eval questions from exactly one place",
                                    expected="--questions FILE or --suite NAME",
                                    fix="e.g. llmfti index tune-fusion eval_squad --suite squad")
        if questions is not None:
            from evals.embedder_gate import rows_from_file

            rows, source = rows_from_file(questions), f"questions {questions}"
        else:
            from evals.datasets import load_rows
            from evals.suite import load_suite

            rows, source = load_rows(load_suite(suite), full=full), f"suite {suite}{' (full)' if full else ''}"
        eval_questions = [Question(r.question, frozenset(r.reference_doc_ids)) for r in rows if r.reference_doc_ids]
        idx = VectorIndex.open(_settings(), name)
        with stage_progress(not as_json) as update:
            result = tune_index(idx, eval_questions, source=source, tenant=tenant, store=not dry_run,
                                on_progress=lambda n, total: update("search", n, total))
        emit(result, as_json, _print_tuning)


def search(
    query: str = typer.Argument(..., help="What to search for."),
    index: str | None = IndexOption,
    k: int = typer.Option(10, "--k", help="Number of results."),
    mode: str | None = typer.Option(None, "--mode", help="dense, fts or hybrid (default: index.default_mode)."),
    version: str | None = typer.Option(None, "--version", help="Search a past version (number or tag)."),
    tenant: str | None = typer.Option(None, "--tenant", help="Tenant to search (default: ingest.default_tenant)."),
    filters: list[str] = typer.Option([], "--filter", help="FIELD OP VALUE, e.g. 'title=Search'. Repeatable."),
    as_json: bool = JsonOption,
) -> None:
    """Search the index: dense, full-text (BM25) or hybrid (both, fused with RRF)."""
    with reporting_errors(as_json):
        from llmfti.filters import Filter
        from llmfti.index.pylance_reader import search_published

        _import_lance_without_pandas()
        settings, parsed = _settings(), [Filter.parse(f) for f in filters]
        # pylance + a numpy query encoder: no lancedb, torch or sentence-transformers to import (a cold
        # search in ~1 s); None for anything off the plain path, which VectorIndex answers (or refuses) as ever
        result = search_published(settings, query, index=index, k=k, mode=mode, tenant=tenant, version=version,
                                  filters=parsed)
        if result is None:
            from llmfti.index import VectorIndex

            result = VectorIndex.open(settings, index).search(query, k=k, mode=mode, tenant=tenant,  # type: ignore[arg-type]
                                                              version=version, filters=parsed)
        payload = {
            "version": result.version,
            "mode": result.mode,
            "results": [
                {"chunk_id": h.chunk_id, "doc_id": h.doc_id, "score": h.score, "text": h.text, "metadata": h.metadata}
                for h in result.hits
            ],
        }
        emit(payload, as_json, _print_results)


def _import_lance_without_pandas() -> None:
    """Import pylance with pandas kept out: pyarrow's dataset module imports pandas eagerly (half of
    ``import lance``: ~0.2 s idle, ~1 s on a busy 2-core machine) though a search never converts to pandas.
    pyarrow then runs as if pandas were not installed, in this one short process; if anything goes wrong,
    lance is imported the normal way when the search opens the index."""
    import sys

    if "lance" in sys.modules or "pandas" in sys.modules:
        return

    class _NoPandas:
        def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
            if name == "pandas" or name.startswith("pandas."):
                raise ModuleNotFoundError("a CLI search does not import pandas", name=name)

    blocker = _NoPandas()
    sys.meta_path.insert(0, blocker)
    try:
        import lance  # noqa: F401
    except ImportError:
        for name in [m for m in sys.modules if m == "lance" or m.startswith("lance.")]:
            del sys.modules[name]
    finally:
        sys.meta_path.remove(blocker)


def _print_summary(s: dict[str, Any]) -> None:
    if s.get("reembedded"):
        r = s["reembedded"]
        console().print(f"[bold]{r['index']}[/] version {r['version']}: {r['reembedded']} chunks re-embedded with "
                        f"{r['embedder']} (was {r['previous_embedder']})")
    where = f"version {s['version']}" if s["version"] is not None else "nothing indexed yet"
    console().print(
        f"[bold]{s['index']}[/] {where}: +{s['docs_added']} added, ~{s['docs_updated']} updated, "
        f"-{s['docs_deleted']} deleted, {s['docs_unchanged']} unchanged; {s['chunks_embedded']} chunks embedded; "
        f"{s['quarantined']} quarantined{' (see: llmfti index quarantine)' if s['quarantined'] else ''}; "
        f"{s['seconds']:.1f}s"
    )


def _print_versions(payload: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title=f"index {payload['index']} (current version {payload['current_version']})",
                  caption="One version per build or rollback; use them with --version, index tag and index "
                          "rollback. The numbers are commit numbers, and a build makes several commits (its rows, "
                          "then the search indices), so they are not consecutive.")
    for column in ("version", "kind", "time", "rows", "tags", "summary"):
        table.add_column(column)
    for v in payload["versions"]:
        s = v["summary"]
        brief = (f"restored v{s['restored_version']}" if v["kind"] == "rollback" else
                 f"fusion: {s.get('text')}" if v["kind"] == "fusion" else
                 f"+{s['docs_added']} ~{s['docs_updated']} -{s['docs_deleted']} ={s['docs_unchanged']}, "
                 f"{s['chunks_embedded']} embedded, {s['quarantined']} quarantined")
        table.add_row(str(v["version"]), v["kind"], f"{v['time']:%Y-%m-%d %H:%M:%S}", str(v["rows"]),
                      ",".join(v["tags"]), brief)
    console().print(table)


def _print_tuning(r: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title=f"fusion of index {r['index']} (version {r['tuned_on_version']}), {r['candidates']} "
                        f"candidates, {r['questions']} questions from {r['source']}",
                  caption=r["decision"] + ("" if r.get("sentence_evidence", "tried") == "tried"
                                           else f"; sentence evidence {r['sentence_evidence']}"))
    for column in ("split", "fusion", "questions", "hit@1", "hit@5", "MRR@10"):
        table.add_column(column)
    for split in ("held_out", "tuning"):
        for which in ("default", "chosen"):
            m = r[split][which]
            table.add_row(split.replace("_", "-"), r[f"{which}_text"] + (" (tuned)" if which == "chosen" else ""),
                          str(m["questions"]), f"{m['hit@1']:.4f}", f"{m['hit@5']:.4f}", f"{m['mrr@10']:.4f}")
    console().print(table)


def _print_quarantine(payload: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title=f"quarantine of index {payload['index']}")
    for column in ("time", "path", "doc_id", "reason"):
        table.add_column(column, overflow="fold")
    for row in payload["quarantined"]:
        table.add_row(f"{row['at']:%Y-%m-%d %H:%M:%S}", row["path"], row["doc_id"] or "", row["reason"])
    console().print(table)


def _print_results(payload: dict[str, Any]) -> None:
    out = console()
    out.print(f"[dim]{payload['mode']} search, index version {payload['version']}[/]")
    if not payload["results"]:
        out.print("no results (try other words, --mode hybrid, or another --tenant)")
    for rank, hit in enumerate(payload["results"], start=1):
        snippet = " ".join(hit["text"].split())[:200]
        out.print(f"[bold]{rank}.[/] {hit['doc_id']} [dim](score {hit['score']:.4f})[/]\n   {snippet}", highlight=False)
