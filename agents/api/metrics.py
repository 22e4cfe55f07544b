"""Prometheus metrics of one app (its own registry, so several apps can live in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class AgentMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("llmfti_requests", "HTTP requests by route and status", ["route", "status"],
                                registry=self.registry)
        self.latency = Histogram("llmfti_request_seconds", "End-to-end request latency", ["route"],
                                 buckets=_STAGE_BUCKETS, registry=self.registry)
        self.stage = Histogram("llmfti_stage_seconds", "Latency of each pipeline stage", ["stage"],
                               buckets=_STAGE_BUCKETS, registry=self.registry)
        self.tokens = Counter("llmfti_tokens", "Tokens processed", ["kind"], registry=self.registry)
        self.fallbacks = Counter("llmfti_generator_fallbacks", "Answers given by the fallback generator",
                                 registry=self.registry)
        self.degraded = Counter("llmfti_degraded_requests", "Requests served without a dependency",
                                ["dependency"], registry=self.registry)
        self.rate_limited = Counter("llmfti_rate_limited", "Requests refused by the rate limit", ["key"],
                                    registry=self.registry)
        self.log_pending = Gauge("llmfti_inference_log_pending", "Log records queued, not yet in Redis/spool",
                                 registry=self.registry)

    def observe_answer(self, timings_ms: dict[str, float], prompt_tokens: int, completion_tokens: int,
                       fallback: bool, degraded: list[str]) -> None:
        for stage, ms in timings_ms.items():
            if stage != "total":
                self.stage.labels(stage).observe(ms / 1000)
        self.tokens.labels("prompt").inc(prompt_tokens)
        self.tokens.labels("completion").inc(completion_tokens)
        if fallback:
            self.fallbacks.inc()
        for dependency in degraded:
            self.degraded.labels(dependency).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
