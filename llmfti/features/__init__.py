"""Tabular features: offline feature groups (LanceDB), the online store (Redis), training data.

Submodules import their heavy dependencies lazily; import what you need from them, e.g.
``from llmfti.features.online_store import OnlineStore``. The names below are re-exported lazily.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "Feature": "llmfti.features.spec",
    "FeatureGroupSpec": "llmfti.features.spec",
    "FeatureGroup": "llmfti.features.feature_group",
    "WriteResult": "llmfti.features.feature_group",
    "OnlineStore": "llmfti.features.online_store",
    "FeatureVector": "llmfti.features.online_store",
    "materialize": "llmfti.features.materialization",
    "get_training_data": "llmfti.features.training_data",
    "TrainingDataset": "llmfti.features.training_data",
    "redis_client": "llmfti.features.embedded_redis",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'llmfti.features' has no attribute {name!r}")
