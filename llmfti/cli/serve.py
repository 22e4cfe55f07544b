"""``llmfti serve``: the OpenAI-compatible agent on uvicorn (indexing the sample docs first if needed)."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from llmfti.cli.output import JsonOption, emit, err_console, reporting_errors


def serve(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on (0.0.0.0 for all)."),
    port: int = typer.Option(8000, min=1, max=65535, help="TCP port."),
    dev: bool = typer.Option(
        False, "--dev", help="Development mode: accept requests without API keys (never on a shared network)."
    ),
    samples: bool = typer.Option(
        True, "--samples/--no-samples", help="If the index is empty, index the sample docs shipped in the repo."
    ),
    log_level: str = typer.Option("info", help="uvicorn log level (critical, error, warning, info, debug)."),
    workers: int = typer.Option(
        None, min=0, max=64, help="Worker processes on the one port (default: agent.workers; 0 = one per core, "
        "at most 8). Rate limits, logs and the index are shared; /metrics sums all workers."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Serve /v1/chat/completions, /v1/completions, /v1/models, /healthz, /readyz and /metrics."""
    with reporting_errors(as_json):
        import uvicorn

        from agents.api.app import create_app
        from agents.api.workers import serve_workers, worker_count
        from llmfti.config import load_settings

        _check_port_free(host, port)  # before anything is printed or started
        settings = load_settings(agent={"auth_mode": "dev"}) if dev else load_settings()
        app = create_app(settings)  # refuses to start without keys unless --dev; loads nothing yet
        indexed = _index_samples_if_empty(settings) if samples else None
        processes = worker_count(settings.agent.workers if workers is None else workers)
        emit(
            {
                "url": f"http://{host}:{port}/v1",
                "workers": processes,
                "auth_mode": settings.agent.auth_mode,
                "generator": settings.agent.generator.backend,
                "index": settings.index.name,
                "indexed_samples": indexed,
                "data_dir": str(settings.data_dir),
            },
            as_json,
            lambda r: err_console().print(
                f"llmfti agent on [bold]{r['url']}[/] (generator {r['generator']}, auth {r['auth_mode']}, "
                f"index {r['index']}{', sample docs indexed' if r['indexed_samples'] else ''}, "
                f"{r['workers']} worker{'s' if r['workers'] > 1 else ''})"
            ),
        )
        if processes == 1:
            uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=log_level == "debug")
        else:
            if dev:  # each worker loads the settings itself
                os.environ["LLMFTI_AGENT__AUTH_MODE"] = "dev"
            serve_workers(settings.data_dir, host, port, processes, log_level,
                          embedded_redis=not settings.redis.url)


def _index_samples_if_empty(settings) -> dict | None:  # noqa: ANN001
    from llmfti.index import VectorIndex

    if VectorIndex.exists(settings) and VectorIndex.open(settings).count_rows() > 0:
        return None
    from pipelines import index_build

    docs = Path(index_build.__file__).resolve().parent / "samples" / "docs"
    err_console().print(f"index {settings.index.name!r} is empty: indexing the sample documents in {docs}")
    return index_build.build_index(settings, [docs])


def _check_port_free(host: str, port: int) -> None:
    """Fail with the fix when ``host:port`` cannot be listened on (taken, or not an address of this machine)."""
    import errno
    import socket

    from llmfti.errors import ConfigError

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"--host {host!r} is not an address this machine can listen on ({exc.strerror})",
                          expected="e.g. 127.0.0.1, 0.0.0.0 or ::1", fix="pass another --host") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: only a live listener blocks
        try:
            probe.bind(address)
        except OSError as exc:
            taken = exc.errno == errno.EADDRINUSE
            raise ConfigError(
                f"cannot listen on {host}:{port}: "
                + ("the port is already in use (another llmfti serve, or another program)" if taken
                   else str(exc.strerror or exc)),
                fix=(f"stop what listens there (see: ss -ltnp 'sport = :{port}'), or use another port: "
                     f"llmfti serve --port {port + 1} (make demo PORT={port + 1})") if taken
                else "pass another --host/--port",
            ) from None
