"""Embedder versions in the model registry: ``registry:NAME:vN`` (pinned) or ``registry:NAME@ALIAS``.

An embedder version is a sentence-transformers model saved in a registry version's ``adapter/``
folder (lineage, eval runs and aliases as for any model). An index records the *pinned* reference
(``registry:NAME:vN``) as its embedder name: an alias moves, a version never does, so the record
says exactly which weights filled the index. ``embedder.model: registry:NAME@production`` resolves
the alias when a process loads the embedder or opens an index.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from llmfti.errors import ConfigError, NotFoundError

if TYPE_CHECKING:
    from llmfti.config import Settings
    from llmfti.registry.model_version import ModelVersion

PREFIX = "registry:"
_PINNED = re.compile(r"registry:(?P<name>[^:@]+):v(?P<version>\d+)")
_ALIASED = re.compile(r"registry:(?P<name>[^:@]+)@(?P<alias>[^:@]+)")


@dataclass(frozen=True)
class EmbedderRef:
    name: str
    version: int | None = None
    alias: str | None = None

    @property
    def pinned(self) -> str:
        return f"{PREFIX}{self.name}:v{self.version}"


def is_registry_ref(model: str) -> bool:
    return model.startswith(PREFIX)


def parse_ref(model: str) -> EmbedderRef:
    """``registry:NAME:vN`` or ``registry:NAME@ALIAS``; anything else is a clear error."""
    if m := _PINNED.fullmatch(model):
        return EmbedderRef(m["name"], version=int(m["version"]))
    if m := _ALIASED.fullmatch(model):
        return EmbedderRef(m["name"], alias=m["alias"])
    raise ConfigError(f"embedder {model!r} is not a registry reference",
                      expected="registry:NAME:vN (a version) or registry:NAME@ALIAS (registry:embedder@production)",
                      fix="name a registered embedder version: llmfti registry list --model NAME")


def resolve_version(settings: Settings, model: str) -> ModelVersion:
    """The registry version ``model`` names (an alias resolved now), with its artifacts available locally."""
    from llmfti.registry.model_registry import ModelRegistry

    ref = parse_ref(model)
    registry = ModelRegistry(settings, ref.name)
    mv = registry.get(ref.version) if ref.version is not None else registry.resolve(ref.alias or "")
    if mv.hyperparameters.get("kind") != "embedder":
        raise ConfigError(f"{model!r} resolves to {mv.ref}, which is not an embedder version",
                          expected="a version registered by `llmfti train-embedder`",
                          fix="name an embedder model of the registry")
    mv = registry.fetch(mv)
    if not (mv.adapter_dir / "modules.json").is_file():
        raise NotFoundError(f"{mv.ref}: no sentence-transformers model at {mv.adapter_dir}",
                            fix="re-register the embedder version; its artifacts are incomplete")
    return mv


def pinned_name(settings: Settings, model: str | None = None) -> str:
    """The name an index records for the configured embedder: registry aliases resolved to ``registry:NAME:vN``."""
    model = model or settings.embedder.model
    if not is_registry_ref(model):
        return model
    ref = parse_ref(model)
    if ref.version is not None:
        return ref.pinned
    return f"{PREFIX}{ref.name}:v{resolve_version(settings, model).version}"


def with_embedder(settings: Settings, model: str) -> Settings:
    """``settings`` with ``embedder.model`` set to ``model`` (a registry alias pinned to its current version)."""
    pinned = pinned_name(settings, model)
    return settings.model_copy(update={"embedder": settings.embedder.model_copy(update={"model": pinned})})
