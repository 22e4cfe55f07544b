"""Load a registered model version for inference: base model + LoRA adapter + its pinned tokenizer.

The tokenizer is always checked against the fingerprint recorded at training time; a different
tokenizer or chat template is refused (:class:`~llmfti.errors.TokenizerMismatchError`).
torch, transformers and peft are imported inside :func:`load_model_version` only.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmfti.errors import MissingDependencyError, NotFoundError

if TYPE_CHECKING:
    from llmfti.llm.tokenization import PinnedTokenizer
    from llmfti.registry.model_version import ModelVersion


def load_pinned_tokenizer_for(mv: ModelVersion, tokenizer: str | Path | None = None) -> PinnedTokenizer:
    """The tokenizer to serve ``mv`` with: its pinned copy, or ``tokenizer`` if it has the same fingerprint."""
    from llmfti.llm.tokenization import load_pinned_tokenizer

    source = tokenizer if tokenizer is not None else mv.tokenizer_dir
    return load_pinned_tokenizer(source, mv.tokenizer_fingerprint, what=f"model version {mv.ref}")


def load_model_version(
    mv: ModelVersion,
    *,
    device: str = "cpu",
    dtype: str | None = None,
    tokenizer: str | Path | None = None,
    merge: bool = False,
) -> tuple[Any, PinnedTokenizer]:
    """(model in eval mode, pinned tokenizer) for ``mv``; ``merge`` folds the adapter into the base.

    On object storage ``mv`` must have been fetched (``ModelRegistry.fetch``) so its files are local.
    """
    pinned = load_pinned_tokenizer_for(mv, tokenizer)
    try:
        import torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise MissingDependencyError(f"loading a model version needs torch, transformers and peft ({exc})",
                                     fix="pip install 'llmfti[train]'") from exc
    if not (mv.adapter_dir / "adapter_config.json").is_file():
        stored = mv.artifact_uri is not None
        raise NotFoundError(f"{mv.ref} has no adapter at {mv.adapter_dir}"
                            + (f" (its artifacts are stored at {mv.artifact_uri})" if stored else ""),
                            expected="adapter_config.json + adapter weights",
                            fix="download them first: ModelRegistry.fetch(mv)" if stored
                            else "re-register the version; its artifact folder is incomplete")
    torch_dtype = getattr(torch, dtype) if dtype else (torch.bfloat16 if device.startswith("cuda") else None)
    try:
        base = AutoModelForCausalLM.from_pretrained(mv.base_model, dtype=torch_dtype)
    except OSError as exc:
        raise NotFoundError(
            f"base model {mv.base_model!r} of {mv.ref} cannot be loaded: {exc}",
            expected="the local folder or cached hub id the version was trained on",
            fix="make the base model available at that path (or in the HF cache)",
        ) from exc
    model = PeftModel.from_pretrained(base, str(mv.adapter_dir))
    if merge:
        model = model.merge_and_unload()
    model.to(device)
    model.eval()
    return model, pinned
