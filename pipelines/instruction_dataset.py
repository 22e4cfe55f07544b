"""Instruction datasets as a feature pipeline: examples from several sources become a versioned
feature group, and a frozen TrainingDataset pins exactly which rows (and data versions) a
fine-tuning run used.

Feature group rows (model-independent: raw text, no prompt formatting)::

    example_id (key) | event_time | question | context | doc_id | passages | answer | source | ingested_at

``passages`` is the JSON list of passages ({chunk_id, doc_id, text, score}) the prompt shows, in
order; ``context`` is their text, for reading. The prompt is rendered at training time with the
agent's own prompt template (``configs/prompts/<agent.prompt>.yaml``) and then the model's pinned
chat template, so a model is trained on exactly the prompt format it is served with.

Sources (any combination in one build; example ids are distinct per source):

- SQuAD-format JSON: question + gold paragraph -> first gold answer (``source = squad:<file>``,
  event time: the file's modification time; ``doc_id`` is the id the index gives the paragraph);
- served requests rated good via ``POST /v1/feedback`` (``pipelines/instruction_feedback.py``);
- indexed documents through templates (``pipelines/instruction_templates.py``).

Schema version 2 added ``passages``; datasets frozen on version 1 groups still read (one passage).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from llmfti.config import Settings
from llmfti.errors import InvalidInputError, NotFoundError

INSTRUCTION_KEY = "example_id"
SCHEMA_VERSION = 2


def instruction_group_spec(name: str):  # noqa: ANN201 - FeatureGroupSpec, imported lazily
    from llmfti.features.spec import Feature, FeatureGroupSpec

    return FeatureGroupSpec(
        name=name,
        version=SCHEMA_VERSION,
        description="Instruction examples: a question, the passages shown with it and the answer to learn.",
        key=INSTRUCTION_KEY,
        key_type="string",
        features=[
            Feature(name="question", type="string", not_null=True, description="The user's question."),
            Feature(name="context", type="string", not_null=True, description="The passages' text."),
            Feature(name="doc_id", type="string", description="Id of the first passage's document in the index."),
            Feature(name="passages", type="string", not_null=True,
                    description="JSON list of the prompt's passages: chunk_id, doc_id, text, score."),
            Feature(name="answer", type="string", not_null=True, description="The answer to learn."),
            Feature(name="source", type="string", not_null=True, description="Where the example came from."),
        ],
    )


def squad_rows(path: Path, *, limit: int | None = None) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """(rows, rejected) from a SQuAD-format file; event_time is the file's modification time."""
    from llmfti.text.loaders.squad import squad_doc_id

    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InvalidInputError(f"cannot read SQuAD file {path}: {exc}",
                                expected='SQuAD JSON: {"data": [{"title", "paragraphs": [{"context", "qas"}]}]}',
                                fix="pass a SQuAD v1.1/v2.0 JSON file") from exc
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise InvalidInputError(f"{path} is not SQuAD format", expected='{"data": [...]} at the top level',
                                fix="pass a SQuAD v1.1/v2.0 JSON file")
    event_time = datetime.fromtimestamp(Path(path).stat().st_mtime, UTC)
    source = f"squad:{Path(path).name}"
    rows, rejected = [], []
    for article in data["data"]:
        title = str(article.get("title", "untitled"))
        for index, paragraph in enumerate(article.get("paragraphs") or []):
            for qa in paragraph.get("qas") or []:
                answers = [a.get("text") for a in qa.get("answers") or [] if isinstance(a, dict)]
                answer = next((a for a in answers if isinstance(a, str) and a.strip()), None)
                if answer is None:  # SQuAD 2.0 unanswerable, or a broken record: kept as a rejection
                    rejected.append({"example_id": str(qa.get("id")), "reason": "no gold answer text"})
                    continue
                doc_id, context = squad_doc_id(title, index), paragraph.get("context")
                passage = {"chunk_id": doc_id, "doc_id": doc_id, "text": context, "score": 1.0}
                rows.append({INSTRUCTION_KEY: str(qa["id"]), "event_time": event_time,
                             "question": qa.get("question"), "context": context, "doc_id": doc_id,
                             "passages": json.dumps([passage], sort_keys=True), "answer": answer, "source": source})
                if limit is not None and len(rows) >= limit:
                    return rows, rejected
    return rows, rejected


def build_instruction_dataset(
    settings: Settings,
    squad_path: Path | None = None,
    *,
    feedback: bool = False,
    templates: list[str] | None = None,
    index: str | None = None,
    index_version: int | None = None,
    tenant: str | None = None,
    group: str | None = None,
    dataset: str | None = None,
    limit: int | None = None,
) -> dict[str, Any]:
    """Upsert examples into feature group ``group`` and freeze them as TrainingDataset ``dataset``.

    Sources: ``squad_path``; ``feedback`` (positively rated requests); ``templates`` over the chunks
    of ``index`` at ``index_version``. ``tenant`` keeps only that tenant's feedback and chunks
    (default: feedback of keys without a tenant and the default tenant's chunks; ``"*"``: all).
    ``limit`` caps the SQuAD questions and the chunks. ``group`` defaults to ``squad_qa`` for a
    SQuAD-only build, else ``instructions``.
    """
    import pyarrow as pa

    from llmfti.features.feature_group import FeatureGroup
    from llmfti.features.training_data import TrainingDataset

    if squad_path is None and not feedback and not templates:
        raise InvalidInputError("no source to build from", expected="a SQuAD file, --feedback and/or --template",
                                fix="pass at least one source")
    rows, rejected, sources = [], [], {}
    if squad_path is not None:
        squad, unanswerable = squad_rows(Path(squad_path), limit=limit)
        rows += squad
        rejected += unanswerable
        sources["squad"] = {"path": str(squad_path), "rows": len(squad), "rejected": len(unanswerable)}
    if feedback:
        from pipelines.instruction_feedback import feedback_rows

        found, skipped, info = feedback_rows(settings, tenant=tenant)
        rows, rejected = rows + found, rejected + skipped
        sources["feedback"] = {**info, "rows": len(found), "rejected": len(skipped)}
    if templates:
        from pipelines.instruction_templates import document_rows

        found, skipped, info = document_rows(settings, templates=templates, index=index, version=index_version,
                                             tenant=tenant, limit=limit)
        rows, rejected = rows + found, rejected + skipped
        sources["documents"] = {**info, "rows": len(found), "rejected": len(skipped)}
    if not rows:
        raise InvalidInputError("the sources hold no usable examples", expected="at least one example",
                                fix=f"check the sources; skipped: {rejected[:3]}")
    group = group or ("squad_qa" if set(sources) == {"squad"} else "instructions")
    fg = FeatureGroup.create(settings, instruction_group_spec(group))
    written = fg.write(rows, mode="upsert", policy="quarantine", source=",".join(sorted(sources)))
    name = dataset or f"{group}-d{written.data_version}"
    keys = sorted({r[INSTRUCTION_KEY] for r in rows})
    spine = pa.table({INSTRUCTION_KEY: keys, "ts": pa.array([datetime.now(UTC)] * len(keys),
                                                              type=pa.timestamp("us", tz="UTC"))})
    td = TrainingDataset.create(settings, name, spine, [fg])
    return {
        "group": group, "group_version": fg.version, "data_version": written.data_version,
        "rows_received": written.rows_received, "rows_written": written.rows_written,
        "rows_quarantined": written.rows_quarantined,
        "rejected_unanswerable": sources.get("squad", {}).get("rejected", 0), "rejected_total": len(rejected),
        "rejected_sample": rejected[:20], "sources": sources,
        "training_dataset": td.name, "num_rows": td.spec.num_rows, "rows_sha256": td.spec.rows_sha256,
    }


def training_dataset_rows(settings: Settings, name: str, *, prompt: str | None = None) -> tuple[
        list[dict[str, Any]], dict[str, Any]]:
    """(instruction rows, lineage) of a frozen TrainingDataset built by :func:`build_instruction_dataset`.

    Each row's ``messages`` are the agent's prompt template rendered with the question and the
    example's passages (on a version 1 group: the gold context as passage [1]); ``answer`` is the
    answer to learn.
    """
    from llmfti.features.training_data import TrainingDataset
    from llmfti.prompts import load_prompt

    td = TrainingDataset.load(settings, name)
    join = td.spec.joins[0]
    table = td.read(verify=True)
    columns = {c: f"{join.prefix}{c}" for c in ("question", "context", "doc_id", "answer")}
    missing = [c for c in columns.values() if c not in table.column_names]
    if missing:
        raise NotFoundError(f"training dataset {name!r} has no columns {missing}",
                            expected="a dataset over an instruction feature group (llmfti dataset build)",
                            fix="build it with `llmfti dataset build`")
    template = load_prompt(prompt or settings.agent.prompt, settings.agent.prompts_dir)
    data = {k: table.column(v).to_pylist() for k, v in columns.items()}
    stored = f"{join.prefix}passages"
    data["passages"] = table.column(stored).to_pylist() if stored in table.column_names else [None] * table.num_rows
    rows = []
    for i in range(table.num_rows):
        if data["answer"][i] is None or data["question"][i] is None:
            continue  # the spine row found no feature row at its timestamp
        if data["passages"][i] is not None:
            passages = json.loads(data["passages"][i])
        else:
            passages = [{"chunk_id": data["doc_id"][i], "doc_id": data["doc_id"][i] or "gold",
                         "text": data["context"][i] or "", "score": 1.0}]
        rows.append({"messages": template.render(question=data["question"][i], passages=passages),
                     "answer": data["answer"][i]})
    lineage = {"training_dataset": name, "rows_sha256": td.spec.rows_sha256, "prompt_id": template.id,
               "spine": {"table": td.spec.spine_table, "data_version": td.spec.spine_data_version},
               "feature_groups": {f"{j.group}@v{j.version}": j.data_version for j in td.spec.joins}}
    return rows, lineage
