"""Every clean stop of an llmfti process stops the embedded redis-server it started, unless another
llmfti process still uses it: SIGTERM and SIGINT of a real ``llmfti serve``, the end of a command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from benchmarks.chaos.harness import ServedAgent, llmfti_exe


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is gone for our purpose
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except OSError:
        return False


def wait_gone(pid: int, timeout_s: float = 30) -> bool:
    for _ in range(int(timeout_s / 0.05)):
        if not alive(pid):
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize(("sig", "workers"), [(signal.SIGTERM, 1), (signal.SIGINT, 1), (signal.SIGTERM, 2)])
def test_stopping_llmfti_serve_stops_its_embedded_redis(tmp_path, sig, workers):
    # with 2 workers the supervisor stops it: a worker exits with os._exit, which skips exit handlers
    agent = ServedAgent(tmp_path / "data", args=["--no-samples", "--workers", str(workers)])
    try:
        agent.start(timeout_s=180)
        redis_pid = agent.redis_pid()
        assert redis_pid is not None and alive(redis_pid)
        agent.proc.send_signal(sig)
        code = agent.proc.wait(timeout=60)
        assert code in (0, 128 + sig, -sig, 1) and code != -signal.SIGKILL
        assert wait_gone(redis_pid), f"redis-server {redis_pid} outlived `llmfti serve` after {sig.name}"
        assert (tmp_path / "data" / "redis" / "appendonly.aof").exists()
    finally:
        agent.stop()


def test_a_server_another_process_uses_is_left_running_then_the_last_one_stops_it(tmp_path):
    data_dir = tmp_path / "data"
    user = subprocess.Popen(  # another llmfti process holding a connection to the same embedded server
        [sys.executable, "-c", (
            "import sys, time\n"
            "from llmfti.config import load_settings\n"
            "from llmfti.features.embedded_redis import exit_on_termination, redis_client\n"
            "exit_on_termination()\n"
            "redis_client(load_settings(data_dir=sys.argv[1])).ping()\n"
            "print('ready', flush=True)\n"
            "time.sleep(600)\n"), str(data_dir)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert user.stdout.readline().strip() == "ready"  # type: ignore[union-attr]
        out = subprocess.run([llmfti_exe(), "logs", "status", "--json"], capture_output=True, text=True,
                             env={**os.environ, "LLMFTI_DATA_DIR": str(data_dir)}, timeout=120, check=True)
        assert json.loads(out.stdout)["stream_pending"] == 0  # the command used the same server
        redis_pid = int((data_dir / "redis" / "redis.pid").read_text())
        assert alive(redis_pid)  # still used by the other process: left running
        user.send_signal(signal.SIGTERM)  # the last one out, stopped by SIGTERM
        user.wait(timeout=60)
        assert wait_gone(redis_pid)
    finally:
        if user.poll() is None:
            user.kill()
            user.wait(timeout=30)
        from benchmarks.chaos.harness import stop_embedded_redis

        stop_embedded_redis(data_dir)


def test_the_end_of_a_cli_command_stops_the_server_it_started(tmp_path):
    data_dir = tmp_path / "data"
    out = subprocess.run([llmfti_exe(), "logs", "status", "--json"], capture_output=True, text=True,
                         env={**os.environ, "LLMFTI_DATA_DIR": str(data_dir)}, timeout=120, check=True)
    assert json.loads(out.stdout)["stream_pending"] == 0  # it did start and use the embedded server
    assert (data_dir / "redis" / "redis.conf").exists()
    assert not servers_on(data_dir / "redis" / "redis.sock"), "redis-server outlived `llmfti logs status`"


def servers_on(socket) -> list[int]:
    """Pids of live processes whose command line names ``socket`` (a redis-server of that data_dir)."""
    from pathlib import Path

    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if str(socket) in cmdline and alive(int(entry.name)):
                pids.append(int(entry.name))
    return pids


def test_a_server_whose_dump_cannot_be_written_is_still_stopped(settings):
    from llmfti.features.embedded_redis import embedded_server, redis_client, stop_unused_servers

    redis_client(settings).xadd("kept", {b"r": b"1"})
    server = embedded_server(settings)
    pid = server.pid()
    redis_client(settings).config_set("dir", "/proc")  # SAVE fails there (as when the data dir is gone)
    stop_unused_servers()  # what every llmfti process runs at exit
    assert wait_gone(pid), "redis-server refused to stop when its RDB could not be written"
    assert redis_client(settings).xlen("kept") == 1  # restarted from the AOF, nothing lost
