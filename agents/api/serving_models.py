"""``/v1/models``: the served model version and its aliases; resolves a request's ``model``."""

from __future__ import annotations

import time

from agents.api.protocol import ModelCard, ModelList
from agents.pipeline import AgentPipeline
from llmfti.errors import NotFoundError


class ModelsService:
    def __init__(self, pipeline: AgentPipeline):
        self.pipeline = pipeline
        self.created = int(time.time())

    @property
    def names(self) -> list[str]:
        generator = self.pipeline.generator
        return [generator.model_id, *getattr(generator, "aliases", [])]

    def list(self) -> ModelList:
        generator = self.pipeline.generator
        cards = [
            ModelCard(
                id=name,
                created=self.created,
                root=generator.model_id,
                parent=None if name == generator.model_id else generator.model_id,
                version=generator.model_version,
                aliases=[n for n in self.names if n != name],
                backend=generator.backend,
            )
            for name in self.names
        ]
        return ModelList(data=cards)

    def resolve(self, model: str) -> str:
        if model in self.names:
            return self.pipeline.generator.model_id
        error = NotFoundError(
            f"the model {model!r} does not exist on this server",
            expected=f"one of {self.names}",
            fix="use a model id listed by GET /v1/models",
        )
        error.code, error.param = "model_not_found", "model"  # type: ignore[attr-defined]
        raise error
