"""``llmfti serve --workers N``: N uvicorn worker processes on one port.

One process keeps about two cores busy: the query encoder (a traced graph, llmfti/embedders/traced.py) and
Lance's searches run with the GIL released beside the event loop; the Python parts of a request share one
GIL. Several processes each have their own GIL, embedder and caches; everything a request must agree on is
already shared through the stores (rate limits, served-request records and the inference log in Redis, the
index and registry in LanceDB), as for replicas. The default is one worker per two cores (:func:`worker_count`).

Each worker gets its **own** socket, all bound to the port with ``SO_REUSEPORT``, so the kernel spreads
new connections over the listening workers, by a hash of each connection: evenly on average, not exactly
(32 keep-alive clients went 20/12 over 2 workers in one run, and the busier worker's clients waited longer).
With one shared socket it is worse: whichever worker wakes first accepts, and 32 keep-alive clients connecting
at once went ~28 to one worker and ~4 to the other. A worker's
socket starts listening only when its app has started (asyncio's ``create_server`` calls ``listen()``), so
no connection waits for a worker that is still loading; a worker that died gets a fresh socket and its old
one is closed. The sockets are created with ``IPPROTO_TCP`` so that asyncio turns on ``TCP_NODELAY`` for
the connections they accept; uvicorn's own ``bind_socket`` leaves the protocol 0, which costs every
keep-alive request ~40 ms of Nagle + delayed ACK (uvicorn issue #3149).

Prometheus metrics go to one multiprocess directory (``PROMETHEUS_MULTIPROC_DIR``) so ``/metrics``
reports all workers whichever answers (agents/api/metrics.py).
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import socket
from pathlib import Path

from uvicorn import Config
from uvicorn.supervisors.multiprocess import Multiprocess, Process

from agents.api.metrics import MULTIPROCESS_DIR_ENV

logger = logging.getLogger("uvicorn.error")
MAX_DEFAULT_WORKERS = 8


def worker_count(configured: int) -> int:
    """``configured`` workers, or for 0 one per two cores this process may use (at least 1, at most 8).

    One worker keeps about two cores busy: its query encoder (a traced graph) and Lance's searches run with the
    GIL released, beside the event loop. On 2 cores, 32 clients, in alternating windows of one run, 1 worker
    served as many requests/s as 2 (83.1 vs 83.0) with less CPU per request (17.9 vs 21.3 ms: bigger encode
    batches) and a lower p99 (621 vs 652 ms): 32 keep-alive connections hashed over 2 workers' sockets split
    unevenly (20/12 in one run: 730 vs 480 ms mean latency per client), which one worker never does."""
    if configured > 0:
        return configured
    return max(1, min(usable_cores() // 2, MAX_DEFAULT_WORKERS))


def usable_cores(cpu_max: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """Cores this process may run on, lowered to its cgroup v2 CPU quota when it has one (a container limited
    to 2 CPUs on a 64-core node gets 2 workers, not 8)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = cpu_max.read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return cores


def worker_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` that other sockets may share (``SO_REUSEPORT``), **not** listening
    yet: the worker's event loop calls ``listen()`` once its app has started, so the kernel never queues a
    connection for a worker that is still loading (or one that died and is being replaced)."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                         flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto or socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(address)
    sock.set_inheritable(True)
    return sock


class Workers(Multiprocess):
    """uvicorn's supervisor (a worker that dies is replaced; SIGTERM/SIGINT stop all of them, each running
    its lifespan shutdown), with one socket per worker instead of one shared by all."""

    def __init__(self, config: Config, workers: int):
        super().__init__(config, sockets=[])
        self.processes_num = workers
        self.worker_sockets = [worker_socket(config.host, config.port) for _ in range(workers)]

    def fresh_socket(self, idx: int) -> socket.socket:
        """Worker ``idx``'s socket replaced: the old one (listening, with connections queued for a worker that
        is gone) is closed, so new connections go to the live workers until the replacement listens."""
        self.worker_sockets[idx].close()
        self.worker_sockets[idx] = worker_socket(self.config.host, self.config.port)
        return self.worker_sockets[idx]

    def close(self) -> None:
        for sock in self.worker_sockets:
            sock.close()

    def init_processes(self) -> None:
        for sock in self.worker_sockets:
            process = Process(self.config, [sock])
            process.start()
            self.processes.append(process)

    def restart_all(self) -> None:  # SIGHUP: replace the workers one by one, each on its own socket
        for idx, old in enumerate(self.processes):
            if self.should_exit.is_set():
                return
            old_socket, sock = self.worker_sockets[idx], worker_socket(self.config.host, self.config.port)
            new = Process(self.config, [sock])
            new.start()
            if not new.wait_until_ready(self.config.timeout_worker_healthcheck, self.should_exit):
                new.kill()
                new.join()
                sock.close()
                logger.error("worker [%s] was not ready in time; keeping worker [%s]", new.pid, old.pid)
                return
            old.terminate()
            old.join()
            old_socket.close()
            self.processes[idx], self.worker_sockets[idx] = new, sock

    def keep_subprocess_alive(self) -> None:
        if self.should_exit.is_set():
            return
        for idx, process in enumerate(self.processes):
            if process.is_alive(timeout=self.config.timeout_worker_healthcheck):
                continue
            process.kill()  # hung or dead
            process.join()
            if self.should_exit.is_set():
                return
            logger.warning("worker [%s] died (exit code %s); starting another", process.pid, process.exitcode)
            forget_worker_metrics(process.pid)
            replacement = Process(self.config, [self.fresh_socket(idx)])
            replacement.start()
            self.processes[idx] = replacement


def forget_worker_metrics(pid: int | None) -> None:
    """Drop a dead worker's live gauges from the multiprocess sums (its counters stay counted)."""
    if pid is not None and os.environ.get(MULTIPROCESS_DIR_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


def worker_app():  # noqa: ANN201 - a FastAPI app (imported lazily)
    """What each worker runs (uvicorn factory): the app from the settings, in a process that dies with its
    supervisor (a ``kill -9`` of ``llmfti serve`` stops its workers too, as it stops a one-process server)."""
    die_with_parent()
    from agents.api.app import create_app

    return create_app()


def die_with_parent() -> None:
    """Linux: SIGKILL this process when the process that started it dies (``PR_SET_PDEATHSIG``)."""
    import ctypes
    import multiprocessing
    import signal
    import sys

    if not sys.platform.startswith("linux"):
        return
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    parent = multiprocessing.parent_process()
    if parent is not None and os.getppid() != parent.pid:  # it died before the prctl took effect
        os._exit(1)


def serve_workers(data_dir: Path, host: str, port: int, workers: int, log_level: str, *,
                  embedded_redis: bool = True) -> None:
    """Run ``workers`` processes of :func:`worker_app` (settings from the environment and YAML, as the
    parent's) until SIGTERM/SIGINT; then stop the embedded redis-server if nothing else uses it."""
    metrics_dir = Path(data_dir).resolve() / "run" / f"metrics-{os.getpid()}"
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True)
    os.environ[MULTIPROCESS_DIR_ENV] = str(metrics_dir)  # read by each worker when it imports prometheus_client
    config = Config("agents.api.workers:worker_app", factory=True, host=host, port=port, workers=workers,
                    log_level=log_level, access_log=log_level == "debug",
                    timeout_worker_healthcheck=60)  # a worker importing torch on a busy machine is not hung
    supervisor = Workers(config, workers)
    try:
        supervisor.run()
    finally:
        supervisor.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)
        if embedded_redis:
            stop_embedded_redis_if_unused(data_dir)


def stop_embedded_redis_if_unused(data_dir: Path) -> None:
    """Once the workers are gone: stop the data dir's embedded redis-server unless another process still uses
    it. A worker cannot do this itself: multiprocessing children leave with ``os._exit``, which skips the
    exit handler that stops the server in a one-process ``llmfti serve``."""
    from llmfti.features.embedded_redis import EmbeddedRedis

    EmbeddedRedis(Path(data_dir).resolve()).stop_if_unused()
