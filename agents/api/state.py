"""What the app builds once at start-up and every request shares."""

from __future__ import annotations

from dataclasses import dataclass

from agents.api.auth import KeyAuthenticator
from agents.api.metrics import AgentMetrics
from agents.api.rate_limit import RateLimiter
from agents.api.serving_chat import ChatCompletionService
from agents.api.serving_completion import CompletionService
from agents.api.serving_feedback import FeedbackService
from agents.api.serving_models import ModelsService
from agents.api.serving_responses import ResponsesService
from agents.pipeline import AgentPipeline
from llmfti.config import Settings


@dataclass
class AgentState:
    settings: Settings
    pipeline: AgentPipeline
    authenticator: KeyAuthenticator
    rate_limiter: RateLimiter
    metrics: AgentMetrics
    models: ModelsService
    chat: ChatCompletionService
    completions: CompletionService
    responses: ResponsesService
    feedback: FeedbackService

    @classmethod
    def build(cls, settings: Settings, pipeline: AgentPipeline) -> AgentState:
        metrics = AgentMetrics()
        models = ModelsService(pipeline)
        return cls(
            settings=settings,
            pipeline=pipeline,
            authenticator=KeyAuthenticator(settings.agent),
            rate_limiter=RateLimiter(pipeline.redis.run, window_s=settings.agent.rate_limit_window_s),
            metrics=metrics,
            models=models,
            chat=ChatCompletionService(pipeline, models, metrics),
            completions=CompletionService(pipeline, models, metrics),
            responses=ResponsesService(pipeline, models, metrics),
            feedback=FeedbackService(settings, pipeline.redis, pipeline.served_requests),
        )
