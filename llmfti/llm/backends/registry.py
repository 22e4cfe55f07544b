"""Backends register by name (duplicates refused) and are imported only when created."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from llmfti.errors import ConfigError, MissingDependencyError

if TYPE_CHECKING:
    from llmfti.config import GeneratorSettings
    from llmfti.llm.backends.base import Generator

_BACKENDS: dict[str, str] = {}
_EXTRAS = {"transformers": "torch transformers (peft for adapters)", "openai": "openai"}


def register_backend(name: str, target: str) -> None:
    """Register ``"module:Class"`` under ``name``; the class needs ``from_settings(GeneratorSettings)``."""
    if name in _BACKENDS and _BACKENDS[name] != target:
        raise ConfigError(
            f"generator backend {name!r} is already registered as {_BACKENDS[name]}",
            fix="register the new backend under another name",
        )
    _BACKENDS[name] = target


def available_backends() -> list[str]:
    return sorted(_BACKENDS)


def create_generator(settings: GeneratorSettings, *, backend: str | None = None) -> Generator:
    """A new (not yet started) generator for ``settings`` (or the named ``backend``)."""
    name = backend or settings.backend
    if name not in _BACKENDS:
        raise ConfigError(
            f"unknown generator backend {name!r}",
            expected=f"one of {available_backends()}",
            fix="set agent.generator.backend to a registered backend",
        )
    module_name, _, class_name = _BACKENDS[name].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise MissingDependencyError(
            f"generator backend {name!r} needs a package that is not installed ({exc.name})",
            fix=f"pip install {_EXTRAS.get(name, exc.name)}",
        ) from exc
    return getattr(module, class_name).from_settings(settings)


register_backend("extractive", "llmfti.llm.backends.extractive:ExtractiveGenerator")
register_backend("transformers", "llmfti.llm.backends.transformers_lm:TransformersGenerator")
register_backend("openai", "llmfti.llm.backends.openai_compat:OpenAICompatGenerator")
