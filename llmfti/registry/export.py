"""Export a model version for ``vllm serve --enable-lora``: adapter, pinned tokenizer, chat template.

The folder holds the PEFT adapter (``adapter_config.json`` + weights, with the base model recorded),
the pinned tokenizer files and its chat template as ``chat_template.jinja``, plus
``llmfti_export.json`` (ref, tokenizer fingerprint, LoRA module name). The printed command serves
the base model with that tokenizer and template and the adapter as the LoRA module
:func:`lora_module_name` names, which is the model the ``openai`` backend asks for when it serves
``registry:...`` on vLLM. The export is written next to ``DIR`` and renamed into place, and its
tokenizer is reloaded and checked against the pinned fingerprint before anything is printed.
"""

from __future__ import annotations

import json
import shlex
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmfti.errors import InvalidInputError, NotFoundError

if TYPE_CHECKING:
    from llmfti.registry.model_version import ModelVersion

VLLM_DEFAULT_MAX_LORA_RANK = 16
MANIFEST = "llmfti_export.json"


def lora_module_name(mv: ModelVersion) -> str:
    """The LoRA module name a version is served under by vLLM, e.g. ``assistant-v3``."""
    return f"{mv.name}-v{mv.version}"


@dataclass(frozen=True)
class VllmExport:
    folder: Path
    module: str
    base_model: str
    lora_rank: int
    tokenizer_fingerprint: str

    @property
    def command(self) -> list[str]:
        """``vllm serve`` arguments that load this export (the base model stays where the version recorded it)."""
        args = ["vllm", "serve", self.base_model, "--tokenizer", str(self.folder),
                "--chat-template", str(self.folder / "chat_template.jinja"),
                "--enable-lora", "--lora-modules", f"{self.module}={self.folder}"]
        if self.lora_rank > VLLM_DEFAULT_MAX_LORA_RANK:
            args += ["--max-lora-rank", str(self.lora_rank)]
        return args

    def to_dict(self) -> dict[str, Any]:
        return {"folder": str(self.folder), "module": self.module, "base_model": self.base_model,
                "lora_rank": self.lora_rank, "tokenizer_fingerprint": self.tokenizer_fingerprint,
                "command": shlex.join(self.command)}


def export_for_vllm(mv: ModelVersion, to: Path, *, overwrite: bool = False) -> VllmExport:
    """Write ``mv`` to the folder ``to`` in the layout ``vllm serve --lora-modules NAME=DIR`` loads."""
    from llmfti.llm.tokenization import load_pinned_tokenizer

    to = Path(to).absolute()
    config_file = mv.adapter_dir / "adapter_config.json"
    if not config_file.is_file():
        raise NotFoundError(f"{mv.ref} has no adapter at {mv.adapter_dir}", expected="adapter_config.json + weights",
                            fix="re-register the version; its artifact folder is incomplete")
    if to.exists() and any(to.iterdir()) and not overwrite:
        raise InvalidInputError(f"{to} exists and is not empty", expected="a new or empty folder",
                                fix="choose another --to folder, or pass --overwrite")
    pinned = load_pinned_tokenizer(mv.tokenizer_dir, mv.tokenizer_fingerprint, what=f"model version {mv.ref}")
    config = json.loads(config_file.read_text(encoding="utf-8"))
    staging = to.with_name(f".{to.name}.incoming-{uuid.uuid4().hex[:8]}")
    try:
        shutil.copytree(mv.adapter_dir, staging)
        config["base_model_name_or_path"] = mv.base_model  # None for a model built from a config
        (staging / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        pinned.save(staging)
        (staging / "chat_template.jinja").write_text(pinned.tokenizer.chat_template, encoding="utf-8")
        load_pinned_tokenizer(staging, mv.tokenizer_fingerprint, what=f"the export of {mv.ref}")  # as written
        export = VllmExport(to, lora_module_name(mv), mv.base_model, int(config.get("r") or 0),
                            mv.tokenizer_fingerprint)
        manifest = {"ref": mv.ref, "module": export.module, "base_model": mv.base_model,
                    "tokenizer_fingerprint": mv.tokenizer_fingerprint, "index_name": mv.index_name,
                    "index_version": mv.index_version}
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        if to.exists():
            shutil.rmtree(to)
        staging.rename(to)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return export
