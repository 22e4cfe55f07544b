"""Shared builders for the agent tests: a small multi-tenant index (built once per session and
copied per module), settings with API keys, user features, an SSE parser, servers on free ports.

Not a test module; test files import it (``from tests.agent_support import ...``).
"""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import Any

KEYS = {
    # key -> (name, tenant, requests per minute)
    "key-default": ("default-app", None, 10_000),
    "key-acme": ("acme-app", "acme", 10_000),
    "key-globex": ("globex-app", "globex", 10_000),
    "key-slow": ("slow-app", None, 3),
}

DOCS = {
    "default": {
        "rollback.md": "# Rolling back\n\nThe command llmfti index rollback restores an older index version. "
        "Every build of the index is a new version, and old versions stay searchable.\n",
        "serving.md": "# Serving\n\nThe agent answers chat requests with cited passages. "
        "It listens on port 8000 by default.\n",
    },
    "acme": {"acme.md": "# Acme rockets\n\nThe Acme rocket engine burns liquid oxygen and kerosene. "
             "Acme launches happen every Tuesday.\n"},
    "globex": {"globex.md": "# Globex formula\n\nThe Globex secret formula is stored in vault seven. "
               "Only Globex engineers may open the vault.\n"},
}


def api_keys_setting() -> list[dict[str, Any]]:
    from agents.api.auth import hash_key

    return [
        {"name": name, "sha256": hash_key(key), "tenant": tenant, "requests_per_minute": rpm}
        for key, (name, tenant, rpm) in KEYS.items()
    ]


def agent_settings(data_dir: Path, **agent: Any):
    """Settings for an agent under ``data_dir`` with the test keys (``agent`` overrides merge in)."""
    from llmfti.config import load_settings

    extra = {k: v for k, v in agent.items() if k in ("redis", "index")}
    agent = {k: v for k, v in agent.items() if k not in extra}
    return load_settings(data_dir=data_dir, agent={"api_keys": api_keys_setting(), **agent}, **extra)


def build_index_template(folder: Path) -> Path:
    """Index ``DOCS`` (one build per tenant) under ``folder/data``; returns that data dir."""
    from llmfti.config import load_settings
    from pipelines.index_build import build_index

    data_dir = folder / "data"
    settings = load_settings(data_dir=data_dir)
    for tenant, docs in DOCS.items():
        src = folder / "docs" / tenant
        src.mkdir(parents=True)
        for name, text in docs.items():
            (src / name).write_text(text)
        build_index(settings, [src], tenant=tenant)
    return data_dir


_TEMPLATE: list[Path] = []


def index_template() -> Path:
    """The data dir of :func:`build_index_template`, built once per test process."""
    if not _TEMPLATE:
        import atexit
        import tempfile

        folder = Path(tempfile.mkdtemp(prefix="llmfti-agent-index-"))
        atexit.register(shutil.rmtree, folder, True)
        _TEMPLATE.append(build_index_template(folder))
    return _TEMPLATE[0]


def data_dir_with_index(data_dir: Path) -> Path:
    """A fresh ``data_dir`` holding a copy of the test index (and nothing else)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    shutil.copytree(index_template() / "lancedb", data_dir / "lancedb")
    return data_dir


def add_user_features(settings, rows: list[dict[str, Any]]) -> None:
    """Write ``user_profile`` rows (unset features take their defaults) and materialize them online."""
    from llmfti.features.feature_group import FeatureGroup
    from llmfti.features.materialization import materialize
    from pipelines.user_features import USER_PROFILE

    full = [{**{f.name: f.default for f in USER_PROFILE.features}, **row} for row in rows]
    group = FeatureGroup.create(settings, USER_PROFILE)
    group.write(full, mode="upsert")
    materialize(settings, group)


def parse_sse(text: str) -> list[Any]:
    """The ``data:`` payloads of an SSE body (JSON objects, or the string ``[DONE]``)."""
    events = []
    for block in text.split("\n\n"):
        if block.startswith("data: "):
            payload = block[len("data: "):]
            events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, timeout_s: float = 60.0, proc: Any = None) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode}")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout_s} s")


class ThreadedServer:
    """A real uvicorn server for ``app`` on a free port, in a background thread of this process."""

    def __init__(self, app: Any):
        import uvicorn

        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ThreadedServer:
        self.thread.start()
        wait_http(self.url + "/healthz")
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


class HangingServer:
    """A TCP server that accepts connections and never answers (to test generator timeouts)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)

    def __enter__(self) -> HangingServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.sock.close()
        for conn in self.conns:
            conn.close()
