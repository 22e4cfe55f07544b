"""OpenTelemetry spans, off unless the standard ``OTEL_*`` variables configure an exporter.

Tracing is on when ``OTEL_TRACES_EXPORTER`` names an exporter other than ``none``, or when
``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set; ``OTEL_SDK_DISABLED=true``
turns it off. Exporters: ``otlp`` (the default once an endpoint is set; ``OTEL_EXPORTER_OTLP_PROTOCOL``
``http/protobuf``, or ``grpc`` if ``opentelemetry-exporter-otlp-proto-grpc`` is installed) and
``console``. The SDK itself reads the rest (``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``,
headers, sampler, batch sizes). Install with ``pip install 'llmfti[tracing]'``.

When tracing is off, :func:`span` is a no-op and nothing of OpenTelemetry is imported (``import
opentelemetry.sdk.trace`` + the OTLP exporter take ~65 ms here, kept off ``import llmfti``).

Spans carry identifiers and versions (request id, tenant, model, index and prompt versions, counts),
never prompt text, answers or user features.

Usage::

    with span("index.embed", chunks=len(pending)) as s:
        ...
        s.set(vectors=n)
"""

from __future__ import annotations

import contextvars
import functools
import logging
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar

log = logging.getLogger("llmfti.tracing")

__all__ = ["AsgiRequestTracing", "Span", "annotate", "annotate_request", "configure", "enabled", "inject_headers",
           "span", "start_span", "traced"]

P = ParamSpec("P")
R = TypeVar("R")
_lock = threading.Lock()
_tracer: Any = None  # an opentelemetry Tracer once configured; None until resolved
_resolved = False
_request_span: contextvars.ContextVar[Span | None] = contextvars.ContextVar("llmfti_request_span", default=None)


def _env_enabled(env: Mapping[str, str]) -> bool:
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporters:
        return exporters != "none"
    return bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def _exporters(env: Mapping[str, str]) -> list[Any]:
    names = [n.strip() for n in (env.get("OTEL_TRACES_EXPORTER") or "otlp").lower().split(",") if n.strip()]
    exporters = []
    for name in names:
        if name == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            exporters.append(ConsoleSpanExporter())
        elif name == "otlp":
            protocol = (env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
                        or "http/protobuf").strip().lower()
            if protocol == "grpc":
                from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
            else:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            exporters.append(OTLPSpanExporter())
        elif name != "none":
            from llmfti.errors import ConfigError

            raise ConfigError(f"OTEL_TRACES_EXPORTER={name!r} is not supported",
                              expected="otlp, console or none (comma-separated)",
                              fix="set OTEL_TRACES_EXPORTER=otlp and OTEL_EXPORTER_OTLP_ENDPOINT")
    return exporters


def _provider_from_env(env: Mapping[str, str]) -> Any:
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        from llmfti.errors import ConfigError

        raise ConfigError(f"OTEL_* variables ask for tracing but OpenTelemetry is not installed ({exc})",
                          fix="pip install 'llmfti[tracing]', or unset OTEL_TRACES_EXPORTER and "
                          "OTEL_EXPORTER_OTLP_ENDPOINT") from exc
    resource = Resource.create({} if env.get("OTEL_SERVICE_NAME") else {"service.name": "llmfti"})
    provider = TracerProvider(resource=resource)
    for exporter in _exporters(env):
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)  # other instrumented libraries join the same traces
    import atexit

    atexit.register(provider.shutdown)  # flush the batch on exit
    return provider


def _get_tracer() -> Any:
    global _tracer, _resolved
    if _resolved:
        return _tracer
    with _lock:
        if not _resolved:
            if _env_enabled(os.environ):
                _tracer = _provider_from_env(os.environ).get_tracer("llmfti")
                log.info("tracing on: exporting spans per the OTEL_* variables")
            _resolved = True
    return _tracer


def configure(provider: Any | None) -> None:
    """Trace into ``provider`` (an SDK ``TracerProvider``, e.g. with an in-memory exporter in tests);
    ``None`` turns tracing off. Without a call, the ``OTEL_*`` variables decide on first use."""
    global _tracer, _resolved
    with _lock:
        _tracer = provider.get_tracer("llmfti") if provider is not None else None
        _resolved = True


def enabled() -> bool:
    return _get_tracer() is not None


def _clean(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """OpenTelemetry attribute values: str/bool/int/float (or lists of them); None is dropped."""
    out: dict[str, Any] = {}
    for key, value in attrs.items():
        if value is None:
            continue
        name = key if "." in key else f"llmfti.{key}"
        if isinstance(value, str | bool | int | float):
            out[name] = value
        elif isinstance(value, list | tuple) and all(isinstance(v, str | bool | int | float) for v in value):
            out[name] = list(value)
        else:
            out[name] = str(value)
    return out


class Span:
    """A live span: :meth:`set` adds attributes; errors raised inside the block are recorded."""

    __slots__ = ("_span",)

    def __init__(self, otel_span: Any = None):
        self._span = otel_span  # None: tracing is off (a no-op span)

    def set(self, **attrs: Any) -> None:
        if self._span is not None:
            self._span.set_attributes(_clean(attrs))

    def end(self, error: BaseException | None = None) -> None:
        """End the span (recording ``error`` if given); later calls do nothing."""
        if self._span is None:
            return
        if error is not None:
            _record_error(self._span, error)
        self._span.end()
        self._span = None

    @property
    def recording(self) -> bool:
        return self._span is not None


_NOOP = Span()


def _record_error(otel_span: Any, error: BaseException) -> None:
    from opentelemetry.trace import Status, StatusCode

    otel_span.record_exception(error)
    otel_span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"[:200]))


def start_span(name: str, **attrs: Any) -> Span:
    """A child of the current span that is *not* made current; call ``.end()``. For work that crosses
    the ``yield``s of an async generator resumed from several tasks (where a context cannot be reset)."""
    tracer = _get_tracer()
    return Span(tracer.start_span(name, attributes=_clean(attrs))) if tracer is not None else Span()


@contextmanager
def span(name: str, **attrs: Any) -> Iterator[Span]:
    """A child of the current span (or a root), current inside the block; errors are recorded."""
    tracer = _get_tracer()
    if tracer is None:
        yield _NOOP
        return
    with tracer.start_as_current_span(name, attributes=_clean(attrs), record_exception=False,
                                      set_status_on_exception=False) as otel_span:
        try:
            yield Span(otel_span)
        except BaseException as exc:
            _record_error(otel_span, exc)
            raise


def traced(name: str, **attrs: Any) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorator: run the (synchronous) function inside ``span(name, **attrs)``."""

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def inner(*args: P.args, **kwargs: P.kwargs) -> R:
            with span(name, **attrs):
                return fn(*args, **kwargs)

        return inner

    return decorate


def annotate(**attrs: Any) -> None:
    """Set attributes on the current span (no-op when tracing is off)."""
    if _get_tracer() is not None:
        from opentelemetry import trace

        trace.get_current_span().set_attributes(_clean(attrs))


def annotate_request(**attrs: Any) -> None:
    """Set attributes on the request span of the current request (no-op outside one, or when off)."""
    live = _request_span.get()
    if live is not None:
        live.set(**attrs)


def inject_headers(headers: dict[str, str] | None = None) -> dict[str, str]:
    """``headers`` plus ``traceparent`` (W3C trace context) of the current span, when tracing is on."""
    headers = {} if headers is None else headers
    if _get_tracer() is not None:
        from opentelemetry.propagate import inject

        inject(headers)
    return headers


class AsgiRequestTracing:
    """Pure-ASGI wrapper: one ``llmfti.request`` span per HTTP request, continuing an incoming
    ``traceparent``; ``request_id`` is read from ``scope["state"]`` (set by an outer middleware).
    Health and metrics probes are not traced."""

    SKIP = ("/healthz", "/readyz", "/metrics")

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] in self.SKIP or _get_tracer() is None:
            await self.app(scope, receive, send)
            return
        from opentelemetry import context
        from opentelemetry.propagate import extract

        carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}
        token = context.attach(extract(carrier))
        status = {"code": 500}

        async def send_status(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            with span("llmfti.request", **{"http.request.method": scope["method"], "url.path": scope["path"],
                                           "request_id": scope.get("state", {}).get("request_id")}) as live:
                reset = _request_span.set(live)
                try:
                    await self.app(scope, receive, send_status)
                finally:
                    _request_span.reset(reset)
                    live.set(**{"http.response.status_code": status["code"]})
                    if status["code"] >= 500:
                        from opentelemetry.trace import Status, StatusCode

                        live._span.set_status(Status(StatusCode.ERROR, f"HTTP {status['code']}"))
        finally:
            context.detach(token)
