"""Real processes for the chaos scenarios: a served agent, a load generator, the drained log.

Everything here drives the system the way an operator would: `llmfti serve` as a subprocess on a
free loopback port (with its own embedded redis-server), HTTP clients on threads, `kill -9` of the
real processes, and `llmfti logs drain` into the real LanceDB table. Nothing is mocked.

Each scenario module in this package exposes ``run(full: bool = False) -> ScenarioResult``; the
short form (``full=False``) is what ``tests/reliability`` runs in CI, the full form gives the issue's
figures (``python -m benchmarks.chaos``).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KEYS: dict[str, tuple[str, str | None]] = {
    # key -> (name, tenant); every key gets a high limit so load is never rate-limited by accident
    "key-default": ("default-app", None),
    "key-acme": ("acme-app", "acme"),
    "key-globex": ("globex-app", "globex"),
}
HIGH_LIMIT = 1_000_000


@dataclass
class ScenarioResult:
    """One row of the chaos table."""

    name: str
    goal: str
    measured: dict[str, Any]
    passed: bool
    notes: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "goal": self.goal, "measured": self.measured, "passed": self.passed,
                "notes": self.notes}


@dataclass
class Outcome:
    """What one client request got back."""

    index: int
    status: int  # HTTP status; 0 when the connection failed
    request_id: str | None
    body: Any  # parsed JSON, the SSE text for streams, or None
    error: str | None
    t_start: float
    t_end: float
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.error is None


LIMITED_KEY = "key-limited"  # the key of limited_api_keys(): no tenant, its own (low) rate limit


def api_keys_setting(keys: dict[str, tuple[str, str | None]] = KEYS, limit: int = HIGH_LIMIT) -> list[dict]:
    return [
        {"name": name, "sha256": hashlib.sha256(key.encode()).hexdigest(), "tenant": tenant,
         "requests_per_minute": limit}
        for key, (name, tenant) in keys.items()
    ]


def limited_api_keys(limit: int) -> str:
    """LLMFTI_AGENT__API_KEYS: the :data:`KEYS` (high limits) plus :data:`LIMITED_KEY` at ``limit`` a window."""
    limited = api_keys_setting({LIMITED_KEY: ("limited-app", None)}, limit)
    return json.dumps(api_keys_setting() + limited)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def llmfti_exe() -> str:
    return str(Path(sys.executable).with_name("llmfti"))


def base_env(data_dir: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of every llmfti subprocess of a scenario: its data_dir, the test keys, offline."""
    env = {**os.environ, "LLMFTI_DATA_DIR": str(data_dir), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "RAGAS_DO_NOT_TRACK": "true", "LLMFTI_AGENT__API_KEYS": json.dumps(api_keys_setting())}
    env.update(extra or {})
    return env


def run_cli(data_dir: Path, *args: str, env: dict[str, str] | None = None, timeout_s: float = 600) -> dict:
    """Run ``llmfti ARGS --json`` for ``data_dir``; returns its one JSON object (raises on failure)."""
    out = subprocess.run([llmfti_exe(), *args, "--json"], env=base_env(data_dir, env), capture_output=True,
                         text=True, timeout=timeout_s, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"llmfti {' '.join(args)} failed ({out.returncode}): {out.stdout[-2000:]}"
                           f"{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def build_index(data_dir: Path, folder: Path, tenant: str | None = None, *, index: str | None = None) -> dict:
    """``llmfti index build FOLDER [--tenant T]`` as a subprocess (as an operator runs it)."""
    args = ["index", "build", str(folder)]
    if tenant:
        args += ["--tenant", tenant]
    if index:
        args += ["--index", index]
    return run_cli(data_dir, *args)


def write_docs(folder: Path, docs: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in docs.items():
        (folder / name).write_text(text)
    return folder


SAMPLE_DOCS = {
    "rollback.md": "# Rolling back\n\nThe command llmfti index rollback restores an older index version. "
    "Every build of the index is a new version, and old versions stay searchable.\n",
    "serving.md": "# Serving\n\nThe agent answers chat requests with cited passages. "
    "It listens on port 8000 by default.\n",
    "features.md": "# User features\n\nUser features are materialized from LanceDB feature groups into Redis. "
    "The agent reads them by user id on every request.\n",
}


class ServedAgent:
    """A real ``llmfti serve`` process on a free port over ``data_dir`` (its own embedded Redis)."""

    def __init__(self, data_dir: Path, *, env: dict[str, str] | None = None, args: tuple[str, ...] | list[str] = (),
                 port: int | None = None):
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.env = base_env(self.data_dir, env)
        self.args = list(args)
        self.proc: subprocess.Popen | None = None
        self._log = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 240) -> ServedAgent:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.data_dir.parent / f"serve-{self.port}.log", "ab")  # noqa: SIM115 - closed in stop
        self.proc = subprocess.Popen(
            [llmfti_exe(), "serve", "--port", str(self.port), "--log-level", "warning", "--json", *self.args],
            env=self.env, stdout=self._log, stderr=subprocess.STDOUT,
        )
        self.wait_ready(timeout_s)
        return self

    def wait_ready(self, timeout_s: float = 240, path: str = "/healthz") -> None:
        import httpx

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"llmfti serve exited with {self.proc.returncode}; log: {self.log_tail()}")
            try:
                if httpx.get(self.url + path, timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"{self.url}{path} not ready within {timeout_s} s; log: {self.log_tail()}")

    def readyz(self) -> tuple[int, Any]:
        import httpx

        try:
            response = httpx.get(self.url + "/readyz", timeout=2.0)
            return response.status_code, response.json()
        except (httpx.HTTPError, ValueError) as exc:
            return 0, str(exc)

    def seconds_until_ready(self, timeout_s: float = 30.0) -> float | None:
        """Seconds until /readyz answers 200, polling every 50 ms; None if it never did."""
        start = time.monotonic()
        while time.monotonic() - start < timeout_s:
            if self.readyz()[0] == 200:
                return time.monotonic() - start
            time.sleep(0.05)
        return None

    def log_tail(self, chars: int = 3000) -> str:
        path = self.data_dir.parent / f"serve-{self.port}.log"
        try:
            return path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def kill9(self) -> None:
        """``kill -9`` of the API process (its embedded Redis keeps running, as after a real crash)."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def terminate(self, timeout_s: float = 60) -> int | None:
        """SIGTERM, then wait; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        return self.proc.returncode

    def restart(self, timeout_s: float = 240) -> ServedAgent:
        """Start again on the same port and data_dir (after a kill or a stop)."""
        self.terminate()
        return self.start(timeout_s)

    def redis_pidfile(self) -> Path:
        return self.data_dir.resolve() / "redis" / "redis.pid"

    def redis_pid(self) -> int | None:
        """The pid of the embedded redis-server of this data_dir, if it is running."""
        try:
            pid = int(self.redis_pidfile().read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        return pid

    def kill_redis9(self) -> int | None:
        """``kill -9`` of the embedded redis-server; returns its pid (None if none ran)."""
        pid = self.redis_pid()
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            wait_gone(pid, 2.0)
        return pid

    def stop(self) -> None:
        """Stop the server and whatever embedded Redis is left for this data_dir."""
        self.terminate()
        stop_embedded_redis(self.data_dir)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> ServedAgent:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def stop_embedded_redis(data_dir: Path) -> None:
    """Stop the embedded redis-server of ``data_dir`` if one still runs (no leftovers after a scenario)."""
    pidfile = Path(data_dir).resolve() / "redis" / "redis.pid"
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    if wait_gone(pid, 5.0):
        return
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def wait_gone(pid: int, timeout_s: float) -> bool:
    """Whether process ``pid`` exited within ``timeout_s`` (polled every 10 ms)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.01)
    return False


def chat_body(question: str, **extra: Any) -> dict[str, Any]:
    return {"model": "llmfti-extractive", "messages": [{"role": "user", "content": question}], **extra}


def default_body(i: int) -> dict[str, Any]:
    questions = ["How do I roll back an index?", "Which port does the agent listen on?",
                 "Where do user features come from?", "Are old index versions searchable?"]
    return chat_body(f"{questions[i % len(questions)]} (#{i})")


def load(
    url: str,
    *,
    clients: int,
    duration_s: float | None = None,
    requests: int | None = None,
    key: str | Callable[[int], str] = "key-default",
    body: Callable[[int], Any] = default_body,
    path: str = "/v1/chat/completions",
    stream: bool = False,
    timeout_s: float = 60.0,
    headers: Callable[[int], dict[str, str]] | None = None,
    stop: threading.Event | None = None,
) -> list[Outcome]:
    """``clients`` threads sending requests until ``duration_s`` passed or ``requests`` were sent.

    ``body(i)`` builds request ``i`` (a dict is sent as JSON, bytes/str raw); ``key`` may depend on
    ``i``. Streams are read to the end. Bounded: stops by itself.
    """
    import httpx

    if duration_s is None and requests is None:
        raise ValueError("give duration_s or requests: the load must stop by itself")
    counter = iter(range(10**9))
    counter_lock = threading.Lock()
    outcomes: list[Outcome] = []
    outcomes_lock = threading.Lock()
    deadline = None if duration_s is None else time.monotonic() + duration_s

    def next_index() -> int | None:
        if deadline is not None and time.monotonic() >= deadline:
            return None
        if stop is not None and stop.is_set():
            return None
        with counter_lock:
            i = next(counter)
        return None if requests is not None and i >= requests else i

    def client_loop() -> None:
        with httpx.Client(base_url=url, timeout=timeout_s) as client:
            while (i := next_index()) is not None:
                payload = body(i)
                if stream and isinstance(payload, dict):
                    payload = {**payload, "stream": True}
                the_key = key(i) if callable(key) else key
                hdrs = {"authorization": f"Bearer {the_key}", **(headers(i) if headers else {})}
                kwargs: dict[str, Any] = {"json": payload} if isinstance(payload, dict) else {"content": payload}
                if not isinstance(payload, dict):
                    hdrs.setdefault("content-type", "application/json")
                start = time.monotonic()
                try:
                    response = client.post(path, headers=hdrs, **kwargs)
                    text = response.text
                    try:
                        parsed: Any = response.json() if not stream or response.status_code != 200 else text
                    except ValueError:
                        parsed = text
                    error = None if response.status_code == 200 else text[:500]
                    if stream and response.status_code == 200 and "[DONE]" not in text:
                        error = "stream ended without [DONE]"
                    outcome = Outcome(i, response.status_code, response.headers.get("x-request-id"), parsed, error,
                                      start, time.monotonic(), dict(response.headers))
                except httpx.HTTPError as exc:
                    outcome = Outcome(i, 0, None, None, f"{type(exc).__name__}: {exc}", start, time.monotonic())
                with outcomes_lock:
                    outcomes.append(outcome)

    threads = [threading.Thread(target=client_loop, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sorted(outcomes, key=lambda o: o.index)


def drain(data_dir: Path) -> dict:
    """``llmfti logs drain`` as a subprocess (the operator's command)."""
    return run_cli(data_dir, "logs", "drain")


def logged_request_ids(data_dir: Path, *, drain_first: bool = True, table: str = "inference_log") -> set[str]:
    """Request ids in the drained LanceDB ``table`` of ``data_dir`` (drains first by default)."""
    if drain_first:
        drain(data_dir)
    from llmfti.config import load_settings
    from llmfti.lance import connect, table_names

    settings = load_settings(data_dir=data_dir)
    db = connect(settings)
    if table not in table_names(db):
        return set()
    return set(db.open_table(table).to_arrow().column("request_id").to_pylist())


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


@contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    """A temporary folder for one scenario (removed afterwards, embedded Redis stopped first)."""
    import shutil

    folder = Path(tempfile.mkdtemp(prefix=f"llmfti-chaos-{prefix}-"))
    try:
        yield folder
    finally:
        for redis_dir in folder.rglob("redis"):
            if (redis_dir / "redis.pid").exists():
                stop_embedded_redis(redis_dir.parent)
        shutil.rmtree(folder, ignore_errors=True)
