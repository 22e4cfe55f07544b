"""Per-key rate limits in Redis (a sliding log), with an in-process fallback when Redis is down.

Each key keeps the times of its *accepted* requests of the last ``window_s`` seconds (a Redis
sorted set, trimmed and checked atomically by one Lua script). A request is accepted while fewer
than ``limit`` remain in the window; a rejected request is not recorded, so it never pushes the
next free slot further away. ``Retry-After`` is the true time until the oldest counted request
leaves the window: a client that waits that long gets a slot (unless another request of the same
key takes it first).

The Redis key of a name is built in one place, :func:`rate_key`; it is one key per name, so the
script is a single-slot operation on Redis Cluster.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from llmfti.errors import RateLimitError

KEY_PREFIX = "llmfti:ratelimit:"

# KEYS[1] the log; ARGV: now (s), window (s), limit, a unique member. Returns {1, "0"} when the
# request is accepted (and recorded), {0, "<seconds until a slot frees>"} when it is not.
_SCRIPT = """
local key = KEYS[1]
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
local count = redis.call('ZCARD', key)
if count < limit then
  redis.call('ZADD', key, now, ARGV[4])
  redis.call('PEXPIRE', key, math.ceil(window * 1000))
  return {1, '0'}
end
local oldest = redis.call('ZRANGE', key, count - limit, count - limit, 'WITHSCORES')
return {0, tostring(tonumber(oldest[2]) + window - now)}
"""


def rate_key(name: str) -> str:
    """The Redis key holding ``name``'s request log (the one place rate-limit keys are built)."""
    return f"{KEY_PREFIX}{name}"


class RateLimiter:
    """``check(name, limit)`` admits one request of ``name`` or raises :class:`RateLimitError`.

    ``redis_run(action)`` calls ``action(client)`` on a Redis client (e.g. ``RedisLink.run``) and
    raises when Redis cannot be reached. Blocking: call it from a worker thread.
    """

    def __init__(self, redis_run: Callable[[Callable[[Any], Any]], Any], clock: Callable[[], float] = time.time,
                 *, window_s: float = 60.0):
        self._redis_run = redis_run
        self._clock = clock
        self.window_s = window_s
        self._local: dict[str, deque[float]] = {}
        self._lock = threading.Lock()
        self._script: Any = None
        self._ids = itertools.count()

    def check(self, name: str, limit: int) -> bool:
        """Admit a request of ``name``. Returns False when Redis was unreachable (local fallback used)."""
        now = self._clock()
        try:
            accepted, wait = self._check_redis(name, limit, now)
            shared = True
        except Exception:  # noqa: BLE001 - Redis down: limit per process instead of not at all
            accepted, wait = self._check_local(name, limit, now)
            shared = False
        if not accepted:
            per = "minute" if self.window_s == 60 else f"{self.window_s:g} s"
            raise RateLimitError(
                f"rate limit of {limit} requests per {per} exceeded for key {name!r}",
                retry_after_s=max(wait, 0.001),
                expected=f"at most {limit} requests per {per}",
                fix="retry after the Retry-After delay, or ask for a higher agent.requests_per_minute",
            )
        return shared

    def _check_redis(self, name: str, limit: int, now: float) -> tuple[bool, float]:
        member = f"{now:.6f}:{id(self):x}:{next(self._ids)}"

        def run(client: Any) -> Any:
            if self._script is None or self._script.registered_client is not client:
                self._script = client.register_script(_SCRIPT)
            return self._script(keys=[rate_key(name)], args=[repr(now), repr(self.window_s), limit, member])

        accepted, wait = self._redis_run(run)
        return bool(int(accepted)), float(wait)

    def _check_local(self, name: str, limit: int, now: float) -> tuple[bool, float]:
        with self._lock:
            times = self._local.setdefault(name, deque())
            while times and times[0] <= now - self.window_s:
                times.popleft()
            if len(times) < limit:
                times.append(now)
                return True, 0.0
            return False, times[len(times) - limit] + self.window_s - now
