"""Text generators behind one small protocol, chosen by ``agent.generator.backend``.

``extractive`` (no model; the default and the fallback), ``transformers`` (a local or hub causal
LM, optional PEFT adapter) and ``openai`` (any OpenAI-compatible server, e.g. ``vllm serve``).
Importing this package loads no torch, transformers or openai: each backend imports them itself.
"""

from llmfti.llm.backends.base import (
    GenerationRequest,
    GenerationResult,
    Generator,
    Passage,
    StopMatcher,
)
from llmfti.llm.backends.registry import available_backends, create_generator, register_backend

__all__ = [
    "GenerationRequest",
    "GenerationResult",
    "Generator",
    "Passage",
    "StopMatcher",
    "available_backends",
    "create_generator",
    "register_backend",
]
