"""llmfti: a feature/training/inference stack for chat and completion APIs over your documents.

Importing this package is cheap: heavy libraries (torch, transformers, sentence-transformers,
ragas, vllm) load only inside the functions that need them.
"""

__version__ = "0.1.0"
