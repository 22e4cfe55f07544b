"""The online inference pipeline: the RAG agent (:mod:`agents.pipeline`) and its OpenAI-compatible
HTTP service (:mod:`agents.api`). Evals use the pipeline object, never the HTTP layer."""
