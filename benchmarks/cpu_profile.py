"""Where a running process spends its CPU, split by stage of the agent's request path.

``py-spy record --format raw`` samples the process's threads while they run (idle threads are not
sampled), so ``samples / rate`` approximates CPU seconds. Each sampled stack goes to the stage of
the frame nearest its leaf that names one (a Lance search called from a worker thread is "index
search", not "event loop + threads"); within one frame the first stage of :data:`STAGES` wins.

py-spy is an optional tool (``pip install py-spy``, in the ``dev`` extra); without it the split is
reported as unmeasured, never guessed. Attaching needs ptrace rights on the process (same user and
``kernel.yama.ptrace_scope`` 0, or root).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

STAGES: list[tuple[str, tuple[str, ...]]] = [
    ("embedding model (query + answer sentences, batched)",
     ("sentence_transformers/", "torch/", "transformers/", "tokenizers/", "query_batcher.py")),
    ("index search (lance: dense + full text + fusion)", ("lancedb/", "lance/", "vector_index.py", "pyarrow/")),
    ("answer selection (split, BM25, cosines)", ("answer_selection.py", "backends/extractive.py")),
    ("inference log writer", ("inference_log", "log_writer")),
    ("redis client (features, served record, rate limit)", ("redis/", "online_store.py", "redis_link.py",
                                                            "served_requests.py", "rate_limit")),
    ("prompt + token limits", ("prompts", "check_limits", "_fit_prompt", "count_tokens")),
    ("metrics + tracing", ("prometheus_client/", "tracing.py", "opentelemetry/", "metrics")),
    ("HTTP + FastAPI + pydantic", ("uvicorn/", "starlette/", "fastapi/", "pydantic", "h11/", "httptools/",
                                   "agents/api/")),
    ("agent pipeline (other)", ("agents/",)),
    ("event loop + threads", ("asyncio/", "threading.py", "concurrent/", "selectors.py")),
]
OTHER = "other"


def py_spy() -> str | None:
    """The py-spy executable beside this Python, else on PATH; None when not installed."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


def stage_of(stack: str) -> str:
    for frame in reversed(stack.split(";")):
        for stage, markers in STAGES:
            if any(marker in frame for marker in markers):
                return stage
    return OTHER


def split(raw: str, rate: int) -> dict[str, float]:
    """CPU seconds per stage from py-spy's raw output (``frame;frame;... count`` per line)."""
    seconds: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            seconds[stage_of(stack)] += int(count) / rate
    return dict(seconds)


class Profiler:
    """``with Profiler(pid, duration_s) as p: <load>`` then ``p.cpu_s`` (stage -> CPU seconds) or ``p.error``."""

    def __init__(self, pid: int, duration_s: float, *, rate: int = 100):
        self.pid, self.duration_s, self.rate = pid, duration_s, rate
        self.cpu_s: dict[str, float] = {}
        self.error: str | None = None
        self._proc: subprocess.Popen | None = None
        self._out = Path(tempfile.mkdtemp(prefix="llmfti-pyspy-")) / "stacks.raw"

    def __enter__(self) -> Profiler:
        exe = py_spy()
        if exe is None:
            self.error = "py-spy is not installed (pip install py-spy): CPU split per stage unmeasured"
            return self
        self._proc = subprocess.Popen(
            [exe, "record", "--pid", str(self.pid), "--rate", str(self.rate), "--duration",
             str(max(1, round(self.duration_s))), "--format", "raw", "--nonblocking", "--subprocesses",
             "--output", str(self._out)],  # --subprocesses: the workers of llmfti serve --workers N
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._proc is None:
            return
        try:
            _, stderr = self._proc.communicate(timeout=self.duration_s + 60)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            _, stderr = self._proc.communicate()
        if self._proc.returncode != 0 or not self._out.exists():
            self.error = f"py-spy failed (exit {self._proc.returncode}): {stderr.strip()[-500:]}"
            return
        self.cpu_s = split(self._out.read_text(), self.rate)
        shutil.rmtree(self._out.parent, ignore_errors=True)

    def per_request_ms(self, requests: int) -> dict[str, float]:
        """CPU milliseconds per request by stage, largest first."""
        n = max(requests, 1)
        return {stage: round(1000 * s / n, 2) for stage, s in sorted(self.cpu_s.items(), key=lambda x: -x[1])}
