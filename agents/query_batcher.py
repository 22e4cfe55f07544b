"""Query embeddings computed together: one forward pass for every query waiting at that moment.

One worker thread owns the embedder. At low load a query is encoded alone as soon as it arrives
(no added wait); under load, queries that arrive while a batch is running are encoded together in
the next one, so throughput grows with concurrency instead of threads fighting over the cores.

Failures are isolated per query: when a batch fails, each of its queries is encoded again on its
own, so only the query that cannot be encoded gets the error; every other one gets its vector.

With ``encode_tokens`` (an embedder's :meth:`encode_tokens`), ``embed(text, tokens=True)`` answers a
:class:`~llmfti.embedders.base.TokenEncoding` (pooled vector + token vectors) from the same forward pass:
a batch holding any such query is encoded that way, and the others of the batch get the pooled vectors.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

log = logging.getLogger("llmfti.agent")


class QueryBatcher:
    def __init__(self, encode: Callable[[list[str]], Sequence[Any]], *, max_batch: int = 64,
                 setup: Callable[[], None] | None = None,
                 encode_tokens: Callable[[list[str]], Sequence[Any]] | None = None):
        """``setup``: run first on the worker thread (e.g. set the model's thread count there)."""
        self._encode = encode
        self._encode_tokens = encode_tokens
        self._setup = setup
        self.max_batch = max_batch
        self._pending: list[tuple[str, Future]] = []
        self._with_tokens: set[int] = set()  # ids of the futures that asked for token vectors
        self._cv = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="llmfti-query-embedder", daemon=True)
        self._thread.start()
        self.batches = 0
        self.texts = 0
        """Texts encoded (each counted once, in the batch that answered it)."""
        self.isolated_failures = 0
        """Queries that failed on their own after their batch failed (the others were answered)."""

    async def embed(self, text: str, *, tokens: bool = False) -> Any:
        """``text``'s vector; ``tokens=True``: its TokenEncoding (needs ``encode_tokens``)."""
        if tokens and self._encode_tokens is None:
            raise RuntimeError("token vectors were asked of a query batcher built without encode_tokens")
        future: Future = Future()
        with self._cv:
            if self._closed:
                raise RuntimeError("the query batcher is closed")
            if tokens:
                self._with_tokens.add(id(future))
            self._pending.append((text, future))
            self._cv.notify()
        return await asyncio.wrap_future(future)

    def _run(self) -> None:
        if self._setup is not None:
            try:
                self._setup()
            except Exception as exc:  # noqa: BLE001 - encoding still works with the library's defaults
                log.warning("query batcher setup failed (%s); encoding with the defaults", exc)
        while True:
            with self._cv:
                while not self._pending and not self._closed:
                    self._cv.wait()
                if not self._pending:
                    return
                batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
            try:
                vectors = self._encode_batch(batch)
                if len(vectors) != len(batch):
                    raise RuntimeError(f"the embedder returned {len(vectors)} vectors for {len(batch)} queries")
            except Exception as exc:  # noqa: BLE001 - find the failing queries, answer the others
                if len(batch) == 1:
                    self._fail(batch[0][1], exc)
                else:
                    log.warning("a batch of %d queries failed (%s); encoding them one by one", len(batch), exc)
                    self._one_by_one(batch)
                continue
            self.batches += 1
            self.texts += len(batch)
            for (_, future), vector in zip(batch, vectors, strict=True):
                self._answer(future, vector)

    def _encode_batch(self, batch: list[tuple[str, Future]]) -> Sequence[Any]:
        """One forward pass: with token vectors when any of the batch asked for them."""
        texts = [text for text, _ in batch]
        with self._cv:
            tokens = any(id(future) in self._with_tokens for _, future in batch)
        return self._encode_tokens(texts) if tokens and self._encode_tokens else self._encode(texts)

    def _answer(self, future: Future, encoded: Any) -> None:
        with self._cv:
            wanted = id(future) in self._with_tokens
            self._with_tokens.discard(id(future))
        future.set_result(encoded if wanted or not hasattr(encoded, "tokens") else encoded.vector)

    def _one_by_one(self, batch: list[tuple[str, Future]]) -> None:
        for text, future in batch:
            try:
                vector = self._encode_batch([(text, future)])[0]
            except Exception as exc:  # noqa: BLE001 - this query alone fails
                self._fail(future, exc)
            else:
                self.batches += 1
                self.texts += 1
                self._answer(future, vector)

    def _fail(self, future: Future, exc: Exception) -> None:
        self.isolated_failures += 1
        with self._cv:
            self._with_tokens.discard(id(future))
        future.set_exception(exc)

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify()
        self._thread.join(timeout=30)
