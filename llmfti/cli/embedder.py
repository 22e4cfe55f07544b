"""``llmfti train-embedder`` and ``llmfti embedder eval|rollback``: the embedder as a registered model.

Fine-tune (``train-embedder``) -> re-embed (``llmfti index build PATH --embedder registry:NAME:vN``) ->
gate (``embedder eval``: records a retrieval eval run) -> promote (``llmfti registry promote N --model
NAME``; gated) -> roll back (``embedder rollback``: the alias and the index move back together).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from llmfti.cli.output import JsonOption, console, emit, reporting_errors

app = typer.Typer(help="Embedder versions: retrieval eval gate and rollback with the index.", no_args_is_help=True)
EmbedderModelOption = typer.Option("embedder", "--model", help="Registry name of the embedder model.")


def train(
    index: str | None = typer.Option(None, "--index", help="Index whose chunks are the training text (default: "
                                                           "index.name)."),
    index_version: str | None = typer.Option(
        None, "--index-version", help="Its version or tag whose chunks to read (default: the newest); an older "
                                      "version is read as built, also after the index was re-embedded."),
    base: str | None = typer.Option(
        None, "--base", help="Embedder to fine-tune (default: the one that built the version read, as that "
                             "version records it; --base registry:embedder@production goes on from the current "
                             "one instead)."),
    model: str = EmbedderModelOption,
    method: str = typer.Option("adapter", "--method",
                               help="adapter: frozen encoder + a residual linear map fitted to the corpus (CPU: "
                                    "seconds); query-tower: the top layers of a query copy of the encoder tuned "
                                    "against every chunk's frozen vector (the larger gain; CPU: ~1 s a step); "
                                    "full: fine-tune every weight (a GPU's job)."),
    objectives: str = typer.Option(
        "sentence,span,salient,cloze,title", "--objectives",
        help="Self-supervised pairs: pseudo-queries from a sentence -> its whole chunk (sentence, span: 5-12 words, "
             "salient: without the corpus' common words, cloze: a name/number removed), title -> first chunk, "
             "ict (inverse cloze), crop (Contriever)."),
    max_pairs: int | None = typer.Option(
        None, "--max-pairs", help="Self-supervised training pairs at most (default: 8 per chunk of the index, "
        "4,000 to 16,000)."),
    max_steps: int | None = typer.Option(
        None, "--max-steps", help="Optimizer steps (default: adapter one per 20 pairs, at least 400; query-tower "
                                    "800; full 100)."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Pairs per batch (adapter 64, query-tower "
                                                                     "128, full 32)."),
    learning_rate: float | None = typer.Option(None, "--lr", help="Learning rate (adapter 3e-4, query-tower 1e-4, "
                                                                  "full 2e-5)."),
    tower_layers: int = typer.Option(3, "--tower-layers", help="query-tower: the encoder's top layers tuned."),
    adapter_l2: float = typer.Option(0.03, "--adapter-l2", help="Adapter: L2 pull towards the identity map."),
    corpus_negatives: int = typer.Option(4096, "--corpus-negatives",
                                         help="Adapter: score each query against up to this many chunks of the "
                                              "pairs (0: in-batch negatives only)."),
    idf_alpha: float = typer.Option(1.0, "--idf-alpha", help="Weight mean pooling by the index's token IDF to this "
                                                            "power (0: plain mean pooling)."),
    max_seq_length: int = typer.Option(128, "--max-seq-length", help="full: tokens per training input."),
    hard_negatives: bool = typer.Option(False, "--hard-negatives", help="Add one mined hard negative per pair."),
    heldout: int = typer.Option(128, "--heldout", help="Self-supervised pairs held out for the before/after score."),
    threads: int = typer.Option(1, "--threads", help="torch CPU threads."),
    device: str = typer.Option("cpu", "--device", help="torch device: cpu, cuda..."),
    seed: int = typer.Option(13, "--seed"),
    pairs: Path | None = typer.Option(None, "--pairs", help='Labelled pairs: JSONL of {"query", "positive"}.'),
    queries: Path | None = typer.Option(None, "--queries", help="BEIR queries.jsonl (with --qrels)."),
    qrels: Path | None = typer.Option(None, "--qrels", help="BEIR qrels TSV: query-id, corpus-id (= doc id), score."),
    feedback: bool = typer.Option(False, "--feedback", help="Add positively rated answers' questions + cited chunks."),
    out: Path | None = typer.Option(None, "--out", help="Run folder (default: data_dir/train_runs/embedder-<time>)."),
    register: bool = typer.Option(True, "--register/--no-register", help="Record the result in the registry."),
    as_json: bool = JsonOption,
) -> None:
    """Adapt the embedder to an index's chunks (+ labels) and register an embedder version.

    Default: mean pooling weighted by the index's token IDF, and a residual linear adapter over the frozen
    encoder fitted on pseudo-queries -> chunk pairs against the corpus' other chunks. --method query-tower tunes
    the top layers of a query copy of the encoder against every chunk's frozen vector (the larger gain, minutes
    of CPU); --method full fine-tunes every weight (--device cuda)."""
    with reporting_errors(as_json):
        from llmfti.config import load_settings
        from pipelines.train_embedder import (
            EmbedderTrainConfig,
            LabelledSources,
            objective,
            train_and_register,
            train_embedder,
        )

        settings = load_settings()
        config = EmbedderTrainConfig(
            method=method, adapter_l2=adapter_l2, corpus_negatives=corpus_negatives, idf_alpha=idf_alpha,
            objectives=tuple(o.strip() for o in objectives.split(",") if o.strip()), max_pairs=max_pairs,
            max_steps=max_steps, batch_size=batch_size, learning_rate=learning_rate, max_seq_length=max_seq_length,
            tower_layers=tower_layers, hard_negatives=hard_negatives, heldout=heldout, threads=threads, device=device,
            seed=seed)
        kwargs: dict[str, Any] = {
            "index": index, "index_version": index_version, "base": base, "config": config, "run_dir": out,
            "labelled": LabelledSources(pairs_file=pairs, queries_file=queries, qrels_file=qrels, feedback=feedback)}
        if register:
            summary = train_and_register(settings, model_name=model, **kwargs)
        else:
            run = train_embedder(settings, **kwargs)
            summary = {"run_dir": str(run.run_dir), "base": run.base, "index": run.index,
                       "index_version": run.index_version, "pairs": run.pair_counts,
                       "objective": objective(run.config), "metrics": run.metrics, "model_version": None}
        emit(summary, as_json, _print_train)


def _print_train(s: dict[str, Any]) -> None:
    out, m = console(), s["metrics"]
    out.print(f"run folder: {s['run_dir']}")
    out.print(f"pairs from {s['index']}@v{s['index_version']}: {s['pairs']}")
    out.print(f"{s.get('objective', '')}")
    out.print(f"{m['steps']} steps in {m['train_seconds']}s, loss {m['first_loss']} -> {m['final_loss']}; "
              f"held-out MRR@10 {m['heldout_mrr10_before']} -> {m['heldout_mrr10_after']}")
    if s.get("model_version"):
        out.print(f"registered [bold]{s['embedder_ref']}[/]; re-embed with: llmfti index build PATH --index "
                  f"{s['index']} --embedder {s['embedder_ref']}")


@app.command("eval")
def evaluate(
    version: str = typer.Argument(..., help="Embedder version to gate (number or alias)."),
    model: str = EmbedderModelOption,
    index: str | None = typer.Option(None, "--index", help="Index holding a version embedded by it."),
    suite: str | None = typer.Option(None, "--suite", help="Eval suite whose questions to ask (e.g. squad, docs)."),
    eval_file: Path | None = typer.Option(None, "--eval-file", help='JSONL of {"question", "doc_ids"} instead.'),
    suite_name: str | None = typer.Option(
        None, "--suite-name", help="Suite to record an --eval-file run under (registry.gate_suites gate promotion)."),
    full: bool = typer.Option(False, "--full", help="Every question of the suite, not its sample."),
    alias: str = typer.Option("production", "--alias", help="The alias it would replace (its baseline)."),
    as_json: bool = JsonOption,
) -> None:
    """Dense hit@5 / MRR@10 of the version's index vectors vs the baseline's; recorded as an eval run."""
    with reporting_errors(as_json):
        from evals.embedder_gate import gate_embedder, rows_from_file
        from llmfti.config import load_settings
        from llmfti.errors import InvalidInputError

        settings = load_settings()
        thresholds: dict[str, float] = {}
        tolerance = 0.0
        if (suite is None) == (eval_file is None):
            raise InvalidInputError("name exactly one of --suite and --eval-file", expected="one of them",
                                    fix="e.g. --suite squad")
        if suite is not None:
            from evals.datasets import load_rows
            from evals.suite import load_suite

            spec = load_suite(suite)
            rows = load_rows(spec, full=full)
            thresholds = {k: v for k, v in spec.thresholds.items() if k in ("hit@5", "mrr@10")}
            tolerance = spec.tolerance
            index = index or spec.index.name
        else:
            rows = rows_from_file(eval_file)
        recorded_suite = suite or suite_name or f"retrieval-{eval_file.stem}"  # type: ignore[union-attr]
        result = gate_embedder(settings, model, version, index or settings.index.name, rows, suite=recorded_suite,
                               alias=alias, thresholds=thresholds, tolerance=tolerance)
        emit(result, as_json, _print_gate)
        if not result["passed"]:
            raise typer.Exit(1)


def _print_gate(r: dict[str, Any]) -> None:
    b = r["baseline"]
    verdict = "[green]passed[/]" if r["passed"] else "[red]failed[/]: " + "; ".join(r["failures"])
    base = f" (baseline {b['embedder']}: {b['hit@5']} / {b['mrr@10']})" if b else " (no baseline index version)"
    console().print(f"{r['model']}:v{r['version']} on {r['index']}@v{r['index_version']}: hit@5 {r['hit@5']}, "
                    f"MRR@10 {r['mrr@10']} over {r['questions']} questions{base}: {verdict} (run {r['run_id']})")


@app.command("rollback")
def rollback(
    model: str = EmbedderModelOption,
    index: str | None = typer.Option(None, "--index", help="Index to move back with it (default: index.name)."),
    alias: str = typer.Option("production", "--alias"),
    reason: str | None = typer.Option(None, "--reason"),
    as_json: bool = JsonOption,
) -> None:
    """Move the embedder alias back one version and restore the index to that version's vectors, together."""
    with reporting_errors(as_json):
        from llmfti.config import load_settings
        from pipelines.reembed_index import rollback_embedder

        settings = load_settings()
        result = rollback_embedder(settings, model, index or settings.index.name, alias, reason=reason)
        emit(result, as_json, lambda r: console().print(
            f"{r['model']} {r['alias']}: v{r['from_version']} -> v{r['to_version']}; index {r['index']} now serves "
            f"the vectors of version {r['restored_index_version']} (new version {r['index_version']})"))
