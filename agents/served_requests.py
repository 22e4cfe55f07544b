"""Which requests this service served, and for which tenant: what ``POST /v1/feedback`` checks.

Every request that passes validation is remembered as soon as the pipeline accepts it (before
any answer byte is sent): in a bounded in-process map and in Redis (``llmfti:served:<request
id>`` holding the tenant, expiring after ``agent.served_request_ttl_s``), so any replica can
verify it at once, before the inference log is drained. Older requests are looked up in the
drained ``inference_log`` table. A request of another tenant is reported as not found (its
existence is not revealed).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict

from agents.redis_link import RedisLink
from llmfti.config import Settings
from llmfti.errors import StoreUnavailableError

log = logging.getLogger("llmfti.agent")
KEY_PREFIX = "llmfti:served:"
LOCAL_ENTRIES = 100_000
_NONE = ""  # how "no tenant" is stored


def served_key(request_id: str) -> str:
    """The Redis key recording one served request (the one place these keys are built)."""
    return f"{KEY_PREFIX}{request_id}"


class ServedRequests:
    def __init__(self, settings: Settings, redis: RedisLink):
        self.settings = settings
        self.redis = redis
        self.ttl_s = settings.agent.served_request_ttl_s
        self._local: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    def remember(self, request_id: str, tenant: str | None) -> None:
        """Record a served request (blocking: call from a thread). Never raises: with Redis down the
        in-process record still answers for this replica."""
        with self._lock:
            self._local[request_id] = tenant or _NONE
            if len(self._local) > LOCAL_ENTRIES:
                self._local.popitem(last=False)
        try:
            self.redis.run(lambda c: c.set(served_key(request_id), tenant or _NONE, ex=self.ttl_s))
        except StoreUnavailableError as exc:
            log.debug("served request %s not recorded in Redis: %s", request_id, exc)

    def belongs_to(self, request_id: str, tenant: str | None) -> bool:
        """True when ``request_id`` was served to ``tenant`` (blocking). Raises
        :class:`StoreUnavailableError` when it cannot be decided now (Redis down, table unreadable)."""
        stored = self._local.get(request_id)
        redis_error: StoreUnavailableError | None = None
        if stored is None:
            try:
                raw = self.redis.run(lambda c: c.get(served_key(request_id)))
                stored = None if raw is None else (raw.decode() if isinstance(raw, bytes) else str(raw))
            except StoreUnavailableError as exc:
                redis_error = exc
        if stored is None:
            stored = self._logged_tenant(request_id)
        if stored is None and redis_error is not None:
            raise StoreUnavailableError(
                f"cannot check request {request_id!r} now: {redis_error.what}",
                fix="retry in a few seconds",
            ) from redis_error
        return stored is not None and stored == (tenant or _NONE)

    def _logged_tenant(self, request_id: str) -> str | None:
        """The tenant of a drained request, from the inference_log table (None: not there)."""
        from llmfti.lance import connect, escape_literal, table_names

        name = self.settings.agent.log_table
        try:
            db = connect(self.settings)
            if name not in table_names(db):
                return None
            rows = (db.open_table(name).search().where(f"request_id = {escape_literal(request_id)}")
                    .select(["tenant"]).limit(1).to_list())
        except (OSError, RuntimeError, ValueError) as exc:
            raise StoreUnavailableError(f"the inference log table cannot be read: {exc}",
                                        fix="retry; check the storage") from exc
        return (rows[0].get("tenant") or _NONE) if rows else None

