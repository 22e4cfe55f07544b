"""RedisLink never starts a redis-server (or waits on a socket) from the event loop; its recovery
thread does, and tells its listeners when Redis is back."""

from __future__ import annotations

import asyncio
import os
import signal
import threading

import pytest


def test_on_the_event_loop_client_never_starts_a_server(settings):
    from agents.redis_link import RedisLink
    from llmfti.errors import StoreUnavailableError

    link = RedisLink(settings)

    async def on_loop():
        with pytest.raises(StoreUnavailableError, match="not connected yet"):
            link.client()

    asyncio.run(on_loop())
    assert not (settings.data_dir / "redis" / "redis.pid").exists()  # nothing was started on the loop
    assert link.connect() and link.healthy  # off the loop (here: a plain thread) it connects


def test_the_recovery_thread_restarts_a_killed_server_and_notifies(settings):
    from agents.redis_link import RedisLink
    from llmfti.errors import StoreUnavailableError
    from llmfti.features.embedded_redis import embedded_server

    link = RedisLink(settings.model_copy(update={"agent": settings.agent.model_copy(update={"redis_retry_s": 0.05})}))
    back = threading.Event()
    link.on_recovered(back.set)
    assert link.connect()
    link.start()
    try:
        server = embedded_server(settings)
        killed = server.pid()
        os.kill(killed, signal.SIGKILL)
        with pytest.raises(StoreUnavailableError):
            link.run(lambda c: c.ping())  # the failure opens the breaker and wakes the thread
        assert back.wait(timeout=30), "the recovery thread did not bring Redis back"
        assert link.healthy and link.ping() and server.pid() != killed and link.recoveries == 1
        assert link.run(lambda c: c.ping())
    finally:
        link.close()
