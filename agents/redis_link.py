"""The agent's one Redis connection: a circuit breaker plus a recovery thread.

While Redis is down, :meth:`RedisLink.client` raises at once (no socket timeout per request): user
features are served missing (flagged ``degraded``), rate limits fall back to per-process counters and
log records spool to disk. A background thread retries every ``agent.redis_retry_s``: it restarts the
embedded redis-server when it died (or reconnects to the external ``redis.url`` once it answers),
closes the breaker and tells its listeners (the log writers replay their spools). Nothing here starts
a server or waits on a socket from the event loop: on the loop :meth:`client` only hands out the
existing client; :meth:`connect` (on a thread) and the recovery thread do the blocking work.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from llmfti.config import Settings
from llmfti.errors import StoreUnavailableError

T = TypeVar("T")
log = logging.getLogger("llmfti.agent.redis")


class RedisLink:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.retry_s = settings.agent.redis_retry_s
        self._client: Any = None
        self._failed_at: float | None = None
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._listeners: list[Callable[[], None]] = []
        self.recoveries = 0
        self.durability_warning: str | None = None

    # -- lifecycle (blocking: call from a thread, never from the event loop) -----------------------------

    def connect(self) -> bool:
        """Create the client (starting the embedded server if needed) and PING it; False if down."""
        from llmfti.features.embedded_redis import redis_client

        try:
            client = redis_client(self.settings)
            client.ping()
        except Exception as exc:  # noqa: BLE001 - any failure: down, the recovery thread retries
            self.mark_failed(exc)
            log.warning("Redis unavailable (%s: %s); serving without it, retrying every %g s",
                        type(exc).__name__, exc, self.retry_s)
            return False
        self._client = client
        self._check_durability(client)
        self._failed_at = None
        return True

    def start(self) -> None:
        """Start the recovery thread (idempotent)."""
        if self._thread is None:
            self._stopping.clear()
            self._thread = threading.Thread(target=self._recover_loop, name="llmfti-redis-recovery", daemon=True)
            self._thread.start()

    def close(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stopping.set()
            self._wake.set()
            thread.join()

    def log_writer(self, stream: str, *, spool_name: str | None = None, record_type: type[Any] | None = None) -> Any:
        """An :class:`~llmfti.inference_log.InferenceLogWriter` on this link: its Redis failures open the
        breaker and it replays its spool as soon as Redis is back."""
        from llmfti.inference_log import SPOOL_NAME, InferenceLogWriter, InferenceRecord

        logs = self.settings.logs
        writer = InferenceLogWriter(self.client, stream, self.settings.data_dir / "spool",
                                    batch_size=logs.batch_size, replay_every_s=logs.replay_every_s,
                                    spool_name=spool_name or SPOOL_NAME, record_type=record_type or InferenceRecord,
                                    on_redis_error=self.mark_failed)
        self.on_recovered(writer.replay_soon)
        return writer

    def on_recovered(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` (on the recovery thread) each time Redis comes back."""
        self._listeners.append(listener)

    # -- the request path (non-blocking) ---------------------------------------------------------------

    def client(self) -> Any:
        """The shared client; raises :class:`StoreUnavailableError` while Redis is down. Never blocks."""
        failed_at = self._failed_at
        if failed_at is not None:
            raise StoreUnavailableError(
                f"Redis failed {time.monotonic() - failed_at:.1f} s ago; reconnecting every {self.retry_s:g} s",
                fix="start Redis or fix redis.url; the agent reconnects (or restarts the embedded server) by itself",
            )
        if self._client is None:
            if _on_event_loop():  # connecting may start a redis-server: never on the loop
                self.mark_failed()
                raise StoreUnavailableError("Redis is not connected yet", fix="wait; the agent connects by itself")
            if not self.connect():
                return self.client()  # raises: the breaker is open now
        return self._client

    def run(self, action: Callable[[Any], T]) -> T:
        """``action(client)``, opening the breaker on a Redis failure."""
        try:
            result = action(self.client())
        except StoreUnavailableError:
            raise
        except Exception as exc:
            from redis.exceptions import RedisError

            if isinstance(exc, RedisError | OSError):
                self.mark_failed(exc)
                from llmfti.features.embedded_redis import unavailable

                raise unavailable(self.settings, exc, "talking to Redis") from exc
            raise
        return result

    def mark_failed(self, exc: BaseException | None = None) -> None:
        """Open the breaker (requests skip Redis) and wake the recovery thread."""
        if self._failed_at is None:
            self._failed_at = time.monotonic()
            if exc is not None:
                log.warning("Redis failed (%s: %s); reconnecting", type(exc).__name__, exc)
        self._wake.set()

    @property
    def healthy(self) -> bool:
        return self._failed_at is None and self._client is not None

    def ping(self) -> bool:
        """For /readyz (blocking, on a thread): the breaker is closed and the server answers PING now."""
        client = self._client
        if self._failed_at is not None or client is None:
            return False
        try:
            return bool(client.ping())
        except Exception as exc:  # noqa: BLE001 - a failed probe is an answer
            self.mark_failed(exc)
            return False

    # -- recovery --------------------------------------------------------------------------------------

    def _recover_loop(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(self.retry_s)
            self._wake.clear()
            if self._stopping.is_set():
                return
            if self._failed_at is not None:
                self.recover()

    def recover(self) -> bool:
        """One attempt: restart/reconnect, PING, close the breaker, notify listeners. Blocking."""
        from llmfti.features.embedded_redis import redis_client

        down_for = time.monotonic() - (self._failed_at or time.monotonic())
        try:
            client = redis_client(self.settings)  # embedded: restarts the server if it does not answer
            client.ping()
        except Exception as exc:  # noqa: BLE001 - still down
            log.debug("Redis still down: %s", exc)
            return False
        if self._client is None or self.settings.redis.url:
            self._check_durability(client)
        self._client = client
        self._failed_at = None
        self.recoveries += 1
        log.warning("Redis is back after %.1f s; replaying spooled records", down_for)
        for listener in list(self._listeners):
            try:
                listener()
            except Exception:  # noqa: BLE001 - one listener must not stop the others
                log.exception("a Redis recovery listener failed")
        return True

    def _check_durability(self, client: Any) -> None:
        if not self.settings.redis.url:
            return  # the embedded server is configured durable by llmfti itself
        from llmfti.features.embedded_redis import describe, durability_problem

        problem = durability_problem(client)
        if problem and problem != self.durability_warning:
            log.warning("Redis at %s does not keep the inference/feedback log streams durably: %s",
                        describe(self.settings), problem)
        self.durability_warning = problem


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


async def wait_durable(accepted: Future[str], settings: Settings) -> None:
    """Await (off the event loop) a log writer's future: the record is durable when this returns.

    No-op with ``logs.durable_ack: false``; raises :class:`StoreUnavailableError` (a 503) when the
    record could not be stored within ``logs.accept_timeout_s``, so nothing is answered unlogged."""
    logs = settings.logs
    if not logs.durable_ack:
        return
    try:  # shield: a timeout or a cancelled request must not cancel the writer's future
        await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(accepted)), logs.accept_timeout_s)
    except StoreUnavailableError:
        raise
    except Exception as exc:
        raise StoreUnavailableError(
            f"the log did not accept the record within {logs.accept_timeout_s:g} s ({type(exc).__name__}: {exc})",
            fix="check Redis and free disk space under data_dir/spool",
        ) from exc
