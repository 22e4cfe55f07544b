"""The agent's one Redis connection, with a short circuit breaker.

After a failure, Redis is skipped for ``agent.redis_retry_s`` seconds, so a dead Redis costs each
request nothing instead of a socket timeout: user features are served missing (flagged
``degraded``), rate limits fall back to per-process counters and log records spool to disk.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from llmfti.config import Settings
from llmfti.errors import StoreUnavailableError

T = TypeVar("T")


class RedisLink:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.retry_s = settings.agent.redis_retry_s
        self._client: Any = None
        self._failed_at: float | None = None
        self._lock = threading.Lock()

    def client(self) -> Any:
        """The shared client; raises :class:`StoreUnavailableError` while the breaker is open."""
        failed_at = self._failed_at
        if failed_at is not None and time.monotonic() - failed_at < self.retry_s:
            raise StoreUnavailableError(
                f"Redis failed {time.monotonic() - failed_at:.1f} s ago; not retried before {self.retry_s} s",
                fix="start Redis or fix redis.url; the agent retries by itself",
            )
        if self._client is None:
            with self._lock:
                if self._client is None:
                    from llmfti.features.embedded_redis import redis_client

                    try:
                        self._client = redis_client(self.settings)
                    except Exception:
                        self.mark_failed()
                        raise
        return self._client

    def run(self, action: Callable[[Any], T]) -> T:
        """``action(client)``, recording success or failure for the breaker."""
        try:
            result = action(self.client())
        except StoreUnavailableError:
            self.mark_failed()
            raise
        except Exception as exc:
            from redis.exceptions import RedisError

            if isinstance(exc, RedisError | OSError):
                self.mark_failed()
                from llmfti.features.embedded_redis import unavailable

                raise unavailable(self.settings, exc, "talking to Redis") from exc
            raise
        self._failed_at = None
        return result

    def mark_failed(self) -> None:
        self._failed_at = time.monotonic()

    @property
    def healthy(self) -> bool:
        return self._failed_at is None

    def ping(self) -> bool:
        """A fresh check, ignoring the breaker (for /readyz)."""
        self._failed_at = None
        try:
            return bool(self.run(lambda c: c.ping()))
        except StoreUnavailableError:
            return False
