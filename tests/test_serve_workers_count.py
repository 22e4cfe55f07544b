"""How many worker processes `llmfti serve` runs (agents/api/workers.py); the processes themselves are tested
for real in tests/reliability/test_serve_workers.py."""

from __future__ import annotations

import os
import socket

import pytest


def test_workers_default_to_one_per_two_usable_cores_at_least_one_at_most_eight(monkeypatch):
    from agents.api.workers import MAX_DEFAULT_WORKERS, worker_count

    assert worker_count(3) == 3  # as configured
    monkeypatch.setattr("agents.api.workers.usable_cores", lambda: 1)
    assert worker_count(0) == 1
    monkeypatch.setattr("agents.api.workers.usable_cores", lambda: 2)
    assert worker_count(0) == 1
    monkeypatch.setattr("agents.api.workers.usable_cores", lambda: 5)
    assert worker_count(0) == 2
    monkeypatch.setattr("agents.api.workers.usable_cores", lambda: 64)
    assert worker_count(0) == MAX_DEFAULT_WORKERS == 8


def test_a_cgroup_cpu_quota_lowers_the_default(monkeypatch, tmp_path):
    from agents.api.workers import usable_cores

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("200000 100000\n")  # 2 CPUs
    assert usable_cores(cpu_max) == 2
    cpu_max.write_text("150000 100000\n")  # 1.5 CPUs: the second worker still has half a core
    assert usable_cores(cpu_max) == 2
    cpu_max.write_text("max 100000\n")  # no quota
    assert usable_cores(cpu_max) == 64
    assert usable_cores(tmp_path / "missing") == 64


def test_worker_sockets_share_the_port_and_keep_tcp_nodelay_on_accepted_connections():
    from agents.api.workers import worker_socket

    first = worker_socket("127.0.0.1", 0)
    port = first.getsockname()[1]
    second = worker_socket("127.0.0.1", port)  # SO_REUSEPORT: a second worker's socket on the same port
    try:
        first.listen()
        second.listen()  # as each worker's event loop does once its app has started
        assert first.proto == second.proto == socket.IPPROTO_TCP  # accepted sockets inherit it (uvicorn#3149)
        with socket.create_connection(("127.0.0.1", port)):
            import select

            ready, _, _ = select.select([first, second], [], [], 5)
            accepted, _ = ready[0].accept()
            with accepted:
                assert accepted.proto == socket.IPPROTO_TCP
    finally:
        first.close()
        second.close()


def test_a_socket_that_is_not_listening_yet_gets_no_connections():
    from agents.api.workers import worker_socket

    starting = worker_socket("127.0.0.1", 0)  # a worker still loading: bound, not listening
    port = starting.getsockname()[1]
    try:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5)
        ready = worker_socket("127.0.0.1", port)
        ready.listen()
        for _ in range(20):  # every connection goes to the listening one
            with socket.create_connection(("127.0.0.1", port), timeout=5):
                accepted, _ = ready.accept()
                accepted.close()
        ready.close()
    finally:
        starting.close()


def test_a_port_taken_without_reuseport_is_refused():
    from agents.api.workers import worker_socket

    with socket.socket() as plain:
        plain.bind(("127.0.0.1", 0))
        plain.listen()
        with pytest.raises(OSError):  # EADDRINUSE: the port belongs to another program
            worker_socket("127.0.0.1", plain.getsockname()[1])
