"""Per-key rate limits in Redis (sliding window), with an in-process fallback when Redis is down.

The estimate is the count of the current one-minute window plus the previous window's count
weighted by how much of it still overlaps the last 60 s. A request over the limit gets a
:class:`RateLimitError` whose ``retry_after_s`` becomes the ``Retry-After`` header.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from llmfti.errors import RateLimitError

WINDOW_S = 60.0
KEY_PREFIX = "llmfti:ratelimit:"


class RateLimiter:
    """``check(name, limit)`` counts one request; raises when over ``limit`` per minute.

    ``redis_run(action)`` calls ``action(client)`` on a Redis client (e.g. ``RedisLink.run``) and
    raises when Redis cannot be reached.
    """

    def __init__(self, redis_run: Callable[[Callable[[Any], Any]], Any], clock: Callable[[], float] = time.time):
        self._redis_run = redis_run
        self._clock = clock
        self._local: dict[tuple[str, int], int] = {}
        self._lock = threading.Lock()

    def check(self, name: str, limit: int) -> bool:
        """Count a request of ``name``. Returns False when Redis was unreachable (local fallback used)."""
        now = self._clock()
        window = int(now // WINDOW_S)
        try:
            current, previous = self._count_redis(name, window)
            shared = True
        except Exception:  # noqa: BLE001 - Redis down: limit per process instead of not at all
            current, previous = self._count_local(name, window)
            shared = False
        elapsed = now - window * WINDOW_S
        estimate = previous * (1 - elapsed / WINDOW_S) + current
        if estimate > limit:
            # When enough of the previous window has slid out for one more request to fit.
            if previous:
                wait = (estimate - limit) / previous * WINDOW_S
            else:  # this window's own excess slides out only during the next window
                wait = WINDOW_S - elapsed + (current - limit) / current * WINDOW_S
            raise RateLimitError(
                f"rate limit of {limit} requests per minute exceeded for key {name!r}",
                retry_after_s=max(1.0, min(wait, WINDOW_S)),
                expected=f"at most {limit} requests per minute",
                fix="retry after the Retry-After delay, or ask for a higher agent.requests_per_minute",
            )
        return shared

    def _count_redis(self, name: str, window: int) -> tuple[int, int]:
        key = f"{KEY_PREFIX}{name}:"

        def count(client: Any) -> list[Any]:
            pipe = client.pipeline(transaction=False)
            pipe.incr(key + str(window))
            pipe.expire(key + str(window), int(WINDOW_S * 2))
            pipe.get(key + str(window - 1))
            return pipe.execute()

        current, _, previous = self._redis_run(count)
        return int(current), int(previous or 0)

    def _count_local(self, name: str, window: int) -> tuple[int, int]:
        with self._lock:
            for stale in [k for k in self._local if k[1] < window - 1]:
                del self._local[stale]
            self._local[(name, window)] = self._local.get((name, window), 0) + 1
            return self._local[(name, window)], self._local.get((name, window - 1), 0)
