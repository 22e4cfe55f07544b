"""The index build's per-document steps on Ray Data: the same build, scaled out by configuration.

``build_index(..., engine=RayEngine(...))`` keeps planning (what was added, changed, deleted) and
the ONE atomic commit in the driver; Ray runs the steps that grow with the corpus:

* **load + clean**: one Ray task per file (``load_file``: the same loaders, the same quarantine);
* **chunk + embed**: a callable class in ``map_batches`` on an actor pool, so each worker loads
  the embedder once and keeps it; chunks of an updated document that are unchanged keep their
  stored vectors (their ids are shipped to the workers, which skip them).

Results come back to the driver, which builds the rows and commits them with
``VectorIndex.apply`` exactly as the local engine does: readers see the old version or the new one.
Workers import ``llmfti`` and ``pipelines``, so a remote cluster (``--ray-address``) needs the
same installation on its nodes (e.g. the same image).
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmfti.config import Settings
from llmfti.embedders.base import EmbedderInfo
from llmfti.errors import ConfigError, EmbedderMismatchError, MissingDependencyError
from llmfti.index import VectorIndex
from llmfti.text.chunking import Chunk
from llmfti.text.document import Document, Quarantined
from pipelines.index_build import Progress, collect, make_chunker

ENGINES = ("local", "ray")
DOCS_PER_BATCH = 32  # documents per map_batches call: one worker chunks and embeds them together
LOCAL_RAY = {"num_cpus": 2, "include_dashboard": False, "object_store_memory": 128 * 1024**2,
             "log_to_driver": False}
"""A Ray started on this machine when no address is given: small, no dashboard."""


@dataclass
class RayEngine:
    """Runs load, clean, chunk and embed on a Ray cluster; the driver plans and commits.

    ``workers``: size of the embedding actor pool (default: as many as the cluster has CPUs,
    or GPUs / ``num_gpus`` when ``num_gpus`` > 0). ``timings`` holds where the time went.
    """

    workers: int | None = None
    num_gpus: float = 0.0
    address: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    _session: ExitStack | None = field(default=None, repr=False)

    def __enter__(self) -> RayEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Shut down the Ray this engine started (a Ray that was already running is left alone)."""
        if self._session is not None:
            self._session.close()
            self._session = None

    def _connect(self) -> None:
        """Join the cluster on first use, so a build that fails its checks never starts Ray."""
        if self._session is None:
            stack = ExitStack()
            self.timings["startup_s"] = stack.enter_context(ray_session(self.address))
            self._session = stack
            check_gpus(self.num_gpus, self.workers)

    def load(self, settings: Settings, roots: list[Path], tenant: str) -> tuple[list[Document], list[Quarantined]]:
        import ray.data

        from llmfti.text.loaders.base import walk

        self._connect()
        started = time.perf_counter()
        listed = list(walk(roots))
        files = [{"i": i, "path": str(item[0]), "source": item[1], "default_id": item[2]}
                 for i, item in enumerate(listed) if not isinstance(item, Quarantined)]
        loaded: dict[int, list[Any]] = {}
        if files:
            ds = ray.data.from_items(files, override_num_blocks=min(len(files), 256)).map(
                _LoadFile(tenant, settings.ingest.max_file_bytes, settings.ingest.max_doc_chars))
            loaded = {int(row["i"]): pickle.loads(row["items"]) for row in ds.take_all()}
        items = [entry for i, item in enumerate(listed)
                 for entry in ([item] if isinstance(item, Quarantined) else loaded[i])]
        self.timings["load_s"] = time.perf_counter() - started
        return collect(items)

    def chunk_and_embed(self, settings: Settings, idx: VectorIndex | None, docs: list[Document], reuse: set[str],
                        report: Progress) -> tuple[EmbedderInfo, list[list[Chunk]], dict[str, Any]]:
        import ray
        import ray.data

        self._connect()
        started = time.perf_counter()
        workers = self._pool_size()
        reuse_ref = ray.put(sorted(reuse))
        blocks = min(len(docs), max(workers, min(-(-len(docs) // DOCS_PER_BATCH), 4 * workers)))
        ds = ray.data.from_items([{"pos": k, "key": d.key, "text": d.text} for k, d in enumerate(docs)],
                                 override_num_blocks=blocks)
        out = ds.map_batches(
            _ChunkEmbed, fn_constructor_kwargs={"settings": settings, "reuse": [reuse_ref]},
            compute=ray.data.ActorPoolStrategy(size=workers), batch_size=DOCS_PER_BATCH, batch_format="numpy",
            num_cpus=1, num_gpus=self.num_gpus or None)
        chunked: list[list[Chunk]] = [[] for _ in docs]
        vectors: dict[str, Any] = {}
        info: EmbedderInfo | None = None
        worker: dict[str, float] = {"model_load_s": 0.0, "chunk_s": 0.0, "embed_s": 0.0}
        done: set[int] = set()
        report("embed", 0, len(docs))
        for batch in out.iter_batches(batch_size=None, batch_format="numpy"):
            for k, blob, vector, fresh in zip(batch["pos"], batch["chunk"], batch["vector"], batch["fresh"],
                                              strict=True):
                chunk = pickle.loads(blob)
                if chunk is not None:
                    chunked[int(k)].append(chunk)
                    if fresh:
                        vectors[chunk.chunk_id] = vector
                done.add(int(k))
            info = info or EmbedderInfo(**pickle.loads(batch["info"][0]))
            for name in worker:
                worker[name] += float(batch[name].sum())
            report("embed", len(done), len(docs))
        if info is None:
            raise RuntimeError("the Ray chunk/embed step returned no batches")  # cannot happen: docs is not empty
        if idx is not None and info.to_dict() != idx.info:
            raise EmbedderMismatchError(
                f"index {idx.name!r} was built with embedder {idx.info} but the Ray workers loaded {info.to_dict()}",
                expected=f"embedder.model = {idx.info['name']!r} (same tokenizer and dimension) on every node",
                fix="install the same embedder on the Ray nodes, or rebuild into a new index name")
        self.timings.update({"chunk_embed_s": time.perf_counter() - started, "workers": workers,
                             **{f"worker_{k}": v for k, v in worker.items()}})
        return info, [sorted(c, key=lambda c: c.index) for c in chunked], vectors

    def _pool_size(self) -> int:
        import ray

        if self.workers is not None:
            return self.workers
        resources = ray.cluster_resources()
        if self.num_gpus:
            return max(1, int(resources.get("GPU", 0) // self.num_gpus))
        return max(1, int(resources.get("CPU", 1)))


class _LoadFile:
    """One file -> its documents and quarantined inputs, pickled (exactly what the local loader yields)."""

    def __init__(self, tenant: str, max_file_bytes: int, max_doc_chars: int):
        self.tenant, self.max_file_bytes, self.max_doc_chars = tenant, max_file_bytes, max_doc_chars

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        from llmfti.text.loaders.base import LoadContext, load_file

        ctx = LoadContext(row["source"], row["default_id"], self.tenant, self.max_file_bytes, self.max_doc_chars)
        return {"i": row["i"], "items": pickle.dumps(list(load_file(Path(row["path"]), ctx)))}


class _ChunkEmbed:
    """A Ray actor: loads the embedder once, then chunks and embeds batches of documents."""

    def __init__(self, settings: Settings, reuse: list[Any]):
        import ray
        import torch

        from llmfti.embedders import load_embedder

        started = time.perf_counter()
        torch.set_num_threads(max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1))))
        embedder_settings = settings.embedder
        if ray.get_gpu_ids():  # --num-gpus: Ray set CUDA_VISIBLE_DEVICES for this worker
            embedder_settings = embedder_settings.model_copy(update={"device": "cuda"})
        self.embedder = load_embedder(embedder_settings)
        self.batch_size = settings.embedder.batch_size
        self.chunker = make_chunker(settings, self.embedder)
        self.reuse = set(ray.get(reuse[0]))
        self.model_load_s = time.perf_counter() - started

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        t0 = time.perf_counter()
        chunked = self.chunker.chunk_many(list(zip(batch["key"].tolist(), batch["text"].tolist(), strict=True)))
        t1 = time.perf_counter()
        rows = [(int(k), c) for k, chunks in zip(batch["pos"], chunked, strict=True) for c in chunks]
        rows += [(int(k), None) for k, chunks in zip(batch["pos"], chunked, strict=True) if not chunks]
        pending = [i for i, (_, c) in enumerate(rows) if c is not None and c.chunk_id not in self.reuse]
        dim = self.embedder.info.dimension
        vectors = np.zeros((len(rows), dim), dtype=np.float32)
        if pending:
            vectors[pending] = self.embedder.encode([rows[i][1].text for i in pending], batch_size=self.batch_size)
        t2 = time.perf_counter()
        fresh = np.zeros(len(rows), dtype=bool)
        fresh[pending] = True
        first = np.zeros(len(rows), dtype=np.float64)  # per-batch costs, on the first row only
        costs = {name: first.copy() for name in ("model_load_s", "chunk_s", "embed_s")}
        costs["model_load_s"][0], costs["chunk_s"][0], costs["embed_s"][0] = self.model_load_s, t1 - t0, t2 - t1
        self.model_load_s = 0.0
        info = pickle.dumps(self.embedder.info.to_dict())
        return {"pos": np.array([k for k, _ in rows], dtype=np.int64),
                "chunk": np.array([pickle.dumps(c) for _, c in rows], dtype=object),
                "vector": vectors, "fresh": fresh, "info": np.array([info] * len(rows), dtype=object), **costs}


@contextmanager
def ray_session(address: str | None = None) -> Iterator[float]:
    """Connect to the Ray cluster at ``address``, or start a small local one; yields the seconds it took.

    An already initialised Ray (e.g. a test's session) is reused and left running.
    """
    try:
        import ray
    except ImportError:
        raise MissingDependencyError("--engine ray needs the package ray[data]",
                                     fix="pip install 'llmfti[ray]' (or pip install 'ray[data]')") from None
    quiet_ray_data()
    if ray.is_initialized():
        yield 0.0
        return
    started = time.perf_counter()
    if address:
        _check_reachable(address)
    try:
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(**LOCAL_RAY)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        if not address:
            raise ConfigError(f"cannot start a local Ray: {exc}",
                              fix="stop a stale local Ray (ray stop), or pass --ray-address of a running "
                                  "cluster (RAY_ADDRESS set in the environment is used too)") from exc
        raise ConfigError(f"cannot connect to the Ray cluster at {address!r}: {exc}",
                          expected="the address of a running Ray head, e.g. ray://head:10001 or head:6379",
                          fix="check --ray-address (or leave it out to start a local Ray)") from exc
    try:
        yield time.perf_counter() - started
    finally:
        ray.shutdown()


def _check_reachable(address: str) -> None:
    """Fail in seconds on an address nothing listens at (Ray itself retries for minutes)."""
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    if address == "auto" or not host or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise ConfigError(f"nothing answers at the Ray address {address!r} ({exc})",
                          expected="a running Ray head: ray://HOST:10001 (client) or HOST:6379 (GCS)",
                          fix="start the cluster (ray start --head) or fix --ray-address") from exc


def quiet_ray_data() -> None:
    """No Ray Data progress bars or per-operator INFO lines: the CLI draws its own progress."""
    import logging

    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)


def check_engine_options(engine: str, ray_address: str | None, num_gpus: float, workers: int | None) -> None:
    """Reject engine options that do not fit together, before anything is loaded."""
    if engine not in ENGINES:
        raise ConfigError(f"unknown index build engine {engine!r}", expected=f"one of {', '.join(ENGINES)}",
                          fix="pass --engine local (this process) or --engine ray")
    if engine == "local" and (ray_address or num_gpus or workers is not None):
        given = ", ".join(name for name, value in (("--ray-address", ray_address), ("--num-gpus", num_gpus),
                                                    ("--workers", workers)) if value)
        raise ConfigError(f"{given} only apply to --engine ray",
                          fix=f"add --engine ray, or drop {given}")
    if num_gpus < 0:
        raise ConfigError(f"--num-gpus {num_gpus} is negative", expected="0 (CPU workers) or more, e.g. 1 or 0.5",
                          fix="pass --num-gpus 1 for one GPU per embedding worker")
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers {workers} is below 1", expected="1 or more embedding workers",
                          fix="pass --workers 2, or leave it out to use every CPU (or GPU) of the cluster")


def check_gpus(num_gpus: float, workers: int | None) -> None:
    """Refuse GPU workers on a cluster without GPUs (Ray would otherwise wait for them forever)."""
    import ray

    have = ray.cluster_resources().get("GPU", 0)
    need = num_gpus * (workers or 1)
    if num_gpus and have < need:
        raise ConfigError(f"--num-gpus {num_gpus} x {workers or 1} worker(s) needs {need:g} GPU(s); "
                          f"the Ray cluster has {have:g}",
                          fix="drop --num-gpus for CPU workers, or point --ray-address at a cluster with GPUs")
