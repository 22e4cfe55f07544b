"""Prometheus metrics of one app (its own registry, so several apps can live in one process).

Under ``llmfti serve --workers N`` each worker process writes its metrics to the directory named by
``PROMETHEUS_MULTIPROC_DIR`` (prometheus_client's multiprocess mode, chosen when the worker imports it)
and ``/metrics`` reports all workers together, whichever worker answers the scrape: counters and
histograms summed, gauges as each declares (``multiprocess_mode``).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

MULTIPROCESS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
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
                                 registry=self.registry, multiprocess_mode="livesum")
        self.embedding_cache_hit_rate = Gauge(
            "llmfti_embedding_cache_hit_rate", "Share of texts found in the embedding cache since start "
            "(query: questions; sentence: the extractive generator's passage sentences; one series per worker "
            "process under --workers)", ["cache"], registry=self.registry, multiprocess_mode="liveall")
        self.embedding_cache_entries = Gauge("llmfti_embedding_cache_entries", "Vectors held by the embedding cache",
                                             ["cache"], registry=self.registry, multiprocess_mode="livesum")
        self.embedding_cache_lookups = Gauge("llmfti_embedding_cache_lookups", "Texts looked up in the embedding "
                                             "cache since start, by result (hit or miss)", ["cache", "result"],
                                             registry=self.registry, multiprocess_mode="livesum")
        self.gc_pause = Histogram("llmfti_gc_pause_seconds", "Python garbage-collector pauses (every thread of the "
                                  "worker stops), by generation", ["generation"], buckets=_STAGE_BUCKETS,
                                  registry=self.registry)
        self._gc_started: dict[int, float] = {}
        self._gc_pauses: deque[tuple[int, float]] = deque(maxlen=100_000)
        self.monitoring = MonitoringGauges(self.registry)

    def watch_gc(self) -> None:
        """Time every collection of this process into ``llmfti_gc_pause_seconds`` until :meth:`close`.

        The collector may run inside any allocation, including one made while prometheus_client holds a
        metric's (non-reentrant) lock: the callback therefore only appends to a deque, and the pauses reach
        the histogram later, from ordinary code (:meth:`publish_gc_pauses`, on every ``/metrics`` read and
        every second under ``--workers``). Observing from the callback deadlocked a worker."""
        import gc

        if self._on_gc not in gc.callbacks:
            gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        generation = info["generation"]
        if phase == "start":
            self._gc_started[generation] = time.perf_counter()
        elif generation in self._gc_started:
            self._gc_pauses.append((generation, time.perf_counter() - self._gc_started.pop(generation)))

    def publish_gc_pauses(self) -> None:
        while self._gc_pauses:
            generation, seconds = self._gc_pauses.popleft()
            self.gc_pause.labels(str(generation)).observe(seconds)

    @property
    def multiprocess(self) -> bool:
        """True in a ``--workers`` worker: another worker may answer the scrape, so gauges are published
        every second (:meth:`publish_every`) rather than only when this worker serves ``/metrics``."""
        return bool(os.environ.get(MULTIPROCESS_DIR_ENV))

    def observe_pipeline(self, pipeline: Any) -> None:
        """The gauges read from the agent pipeline: log queue and embedding caches."""
        self.publish_gc_pauses()
        self.log_pending.set(pipeline.log_writer.pending)
        self.observe_embedding_caches({"query": pipeline.query_embeddings, "sentence": pipeline.sentence_embeddings,
                                       "sentence_tokens": pipeline.sentence_tokens})

    async def publish_every(self, pipeline: Any, seconds: float = 1.0) -> None:
        import asyncio

        while True:
            self.observe_pipeline(pipeline)
            await asyncio.sleep(seconds)

    def observe_embedding_caches(self, caches: dict[str, Any]) -> None:
        """Set the hit-rate and size gauges of each ``EmbeddingCache`` (None: not open yet)."""
        for name, cache in caches.items():
            if cache is not None:
                self.embedding_cache_hit_rate.labels(name).set(cache.hit_rate)
                self.embedding_cache_entries.labels(name).set(len(cache))
                self.embedding_cache_lookups.labels(name, "hit").set(cache.hits)
                self.embedding_cache_lookups.labels(name, "miss").set(cache.misses)

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
        """The text exposition: this app's registry, or with ``PROMETHEUS_MULTIPROC_DIR`` set every worker's."""
        if not os.environ.get(MULTIPROCESS_DIR_ENV):
            return generate_latest(self.registry)
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)

    def close(self) -> None:
        """Stop timing collections; in a worker, its live gauges leave the multiprocess sums (its counters
        stay counted)."""
        import gc

        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
        if os.environ.get(MULTIPROCESS_DIR_ENV):
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(os.getpid())


class MonitoringGauges:
    """``llmfti_monitoring_<field>`` gauges from the latest row of the monitoring feature group, plus
    ``llmfti_monitoring_alerts`` (alerts that fired in that window). :meth:`refresh_if_stale` reads
    LanceDB: call it in a worker thread (the /metrics route does); it reads at most every
    ``monitoring.metrics_refresh_s``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        from llmfti.monitoring.group import GAUGES

        self.fields = GAUGES
        self.gauges = {f: Gauge(f"llmfti_monitoring_{f}", f"Latest monitoring window: {f}", registry=registry,
                                multiprocess_mode="mostrecent") for f in GAUGES}
        self.alerts = Gauge("llmfti_monitoring_alerts", "Alerts fired in the latest monitoring window",
                            registry=registry, multiprocess_mode="mostrecent")
        self.window_start = Gauge("llmfti_monitoring_window_start_seconds",
                                  "Start of the latest monitoring window (unix time)", registry=registry,
                                  multiprocess_mode="mostrecent")
        self._read_at = 0.0
        self._lock = threading.Lock()

    def refresh_if_stale(self, settings: Any) -> None:
        with self._lock:
            if time.monotonic() - self._read_at < settings.monitoring.metrics_refresh_s and self._read_at:
                return
            self._read_at = time.monotonic()
        from llmfti.monitoring.group import latest_row

        try:
            row = latest_row(settings)
        except Exception:  # noqa: BLE001 - a monitoring problem must never break /metrics
            logging.getLogger("llmfti.agent").warning("could not read the monitoring group", exc_info=True)
            return
        if row is None:
            return
        for field, gauge in self.gauges.items():
            value = row.get(field)
            gauge.set(float("nan") if value is None else float(value))
        self.alerts.set(len(row.get("alerts") or []))
        self.window_start.set(row["window_start"].timestamp())
