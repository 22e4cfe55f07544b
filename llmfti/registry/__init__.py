"""The model registry: versioned fine-tuned models with lineage, eval gates and aliases.

``ModelRegistry(settings).resolve("production")`` gives the :class:`ModelVersion` to serve,
including the index version it is coupled to. Nothing heavy is imported here.
"""

from llmfti.registry.model_registry import ModelRegistry
from llmfti.registry.model_version import AliasEvent, EvalRun, ModelVersion

__all__ = ["AliasEvent", "EvalRun", "ModelRegistry", "ModelVersion"]
