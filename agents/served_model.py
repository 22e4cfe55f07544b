"""Which model the agent serves: ``agent.generator`` as configured, or a registry version.

``agent.generator.model: registry:production`` (or ``registry:<model name>@<alias>``, or
``registry:v3``) serves that model version with the ``transformers`` backend: its base model, its
LoRA adapter and its pinned tokenizer (refused if the fingerprint differs); with the ``openai``
backend, the upstream (vLLM) LoRA module ``llmfti registry export`` names for it, whose tokenizer is
checked against the pinned one at start-up. ``/v1/models`` lists
the model name and every alias pointing at that version, and retrieval is pinned to the index
version the model was registered with, so a registry rollback moves model and index together.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from llmfti.config import Settings
from llmfti.errors import ConfigError
from llmfti.llm.backends import Generator, create_generator

if TYPE_CHECKING:
    from llmfti.registry.model_version import ModelVersion

PREFIX = "registry:"


@dataclass(frozen=True)
class ServedModel:
    """What serves a request: the model and the index version it is coupled to. Immutable: the agent
    swaps the whole object when an alias moves, and a request keeps the one it started with."""

    generator: Generator
    index_version: int | None = None
    """The index version to search (None: the latest)."""
    embedder: str | None = None
    """The embedder (version) whose vectors that index version holds, as the model version recorded it."""


def follows_alias(settings: Settings) -> bool:
    """True when the model is ``registry:[name@]alias``: it may move (a ``registry:vN`` never does)."""
    model = settings.agent.generator.model or ""
    return model.startswith(PREFIX) and not re.fullmatch(r"v\d+", model[len(PREFIX):].rpartition("@")[2])


def served_model(settings: Settings) -> ServedModel:
    config = settings.agent.generator
    if not (config.model or "").startswith(PREFIX):
        return ServedModel(create_generator(config))
    if config.backend not in ("transformers", "openai"):
        raise ConfigError(
            f"agent.generator.model {config.model!r} names a registry version, which the "
            f"{config.backend!r} backend cannot load",
            expected="backend transformers (in process) or openai (vllm serving the exported adapter)",
            fix="use backend transformers, or openai after `llmfti registry export N --to DIR` + vllm serve",
        )
    from llmfti.llm.backends.openai_compat import OpenAICompatGenerator
    from llmfti.llm.backends.transformers_lm import TransformersGenerator
    from llmfti.registry.model_registry import ModelRegistry

    name, _, ref = config.model[len(PREFIX):].rpartition("@")
    registry = ModelRegistry(settings, name or None)
    aliases = registry.aliases()  # one read: the version served and its alias names come from the same state
    if re.fullmatch(r"v\d+", ref):
        mv = registry.get(int(ref[1:]))
    else:
        mv = registry.get(aliases[ref]) if ref in aliases else registry.resolve(ref)  # resolve: the clear error
    pinned = mv.index_version if mv.index_name == settings.index.name else None
    _check_embedder(settings, mv, pinned)
    mv = registry.fetch(mv)  # artifacts on object storage: downloaded once into data_dir/cache
    if config.backend == "openai":  # upstream LoRA module of this version; its tokenizer checked at start
        generator: TransformersGenerator | OpenAICompatGenerator = OpenAICompatGenerator.for_model_version(config, mv)
    else:
        generator = TransformersGenerator(
            mv.base_model, adapter=str(mv.adapter_dir), device=config.device,
            model_id=config.served_name or mv.name, tokenizer=str(mv.tokenizer_dir),
            tokenizer_fingerprint=mv.tokenizer_fingerprint, version=mv.ref,
        )
    generator.aliases = sorted(alias for alias, version in aliases.items() if version == mv.version)
    return ServedModel(generator, pinned, mv.embedder if pinned is not None else None)


def _check_embedder(settings: Settings, mv: ModelVersion, pinned: int | None) -> None:
    """Refuse a model coupled to an index version filled by another embedder than the one queries use."""
    from llmfti.embedders.registry_embedder import pinned_name
    from llmfti.errors import EmbedderMismatchError

    recorded = mv.embedder
    if pinned is None or not recorded:
        return
    configured = pinned_name(settings)
    if recorded != configured:
        raise EmbedderMismatchError(
            f"{mv.ref} is coupled to index {settings.index.name!r} version {pinned}, embedded by {recorded!r}, "
            f"but this process embeds queries with {configured!r}",
            expected=f"embedder.model = {recorded!r}",
            fix=f"set embedder.model to {recorded}, or serve a model version coupled to an index version of "
                f"{configured}")
