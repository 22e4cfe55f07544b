"""The RAG agent: one object used by the HTTP service and by evals.

For a request (messages + user id + tenant) :class:`AgentPipeline` computes the on-demand
features, reads the user's online features, retrieves passages (hybrid by default, restricted to
the tenant), renders the versioned prompt, generates (falling back to the extractive generator
when a model backend fails or times out), attaches citations, times every stage and writes one
inference-log record. Blocking work (query embedding, index search, Redis) runs on threads,
concurrently where independent; nothing is loaded per request.

Offline use (evals), inside one event loop::

    async def main():
        pipeline = AgentPipeline.from_settings(load_settings())
        await pipeline.start()
        try:
            answer = await pipeline.answer(AgentRequest(messages=[{"role": "user", "content": q}]))
        finally:
            await pipeline.close()

    asyncio.run(main())
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import Future
from typing import Any

from agents.embedding_cache import EmbeddingCache
from agents.query_batcher import QueryBatcher
from agents.redis_link import RedisLink, wait_durable
from agents.served_model import ServedModel, follows_alias, served_model
from agents.served_requests import ServedRequests
from agents.turn import AgentAnswer, AgentRequest, Turn, citations, elapsed_ms
from llmfti.answer_calibration import abstention_rule
from llmfti.config import Settings
from llmfti.embedders.base import embedder_fingerprint, query_encoder
from llmfti.errors import (
    GenerationError,
    InvalidInputError,
    NotFoundError,
    RequestLimitError,
    StoreUnavailableError,
)
from llmfti.inference_log import INCOMPLETE, InferenceLogWriter, InferenceRecord, now_utc, spool_size
from llmfti.llm.backends import GenerationRequest, GenerationResult, Generator, Passage, StopMatcher, create_generator
from llmfti.on_demand import request_features, retrieval_query
from llmfti.prompts import PromptTemplate, load_prompt
from llmfti.sentence_ranker import ranking_rule
from llmfti.tracing import Span, annotate_request, span, start_span

log = logging.getLogger("llmfti.agent")
__all__ = ["AgentAnswer", "AgentPipeline", "AgentRequest"]


def limit_threads(threads: int | None) -> None:
    """torch's intra-op threads for this process (and the calling thread), when torch is loaded."""
    torch = sys.modules.get("torch")
    if threads and torch is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


class AgentPipeline:
    """Build with :meth:`from_settings`, then ``await start()`` once; ``await close()`` at the end."""

    def __init__(
        self,
        settings: Settings,
        *,
        generator: Generator,
        fallback: Generator | None,
        prompt: PromptTemplate,
        redis: RedisLink,
        log_writer: InferenceLogWriter,
        index_version: int | None = None,
    ):
        self.settings = settings
        self.config = settings.agent
        self.served = ServedModel(generator, index_version)
        """What serves new requests: model + index version, replaced as one object when an alias moves;
        each request captures it once at its start and uses only that (never a mix of two)."""
        self.fallback = fallback
        self.prompt = prompt
        self.redis = redis
        self.log_writer = log_writer
        self.served_requests = ServedRequests(settings, redis)
        self.index: Any = None
        self._batcher: QueryBatcher | None = None
        self._sentence_batcher: QueryBatcher | None = None  # a query tower's passages take the document route
        self.sentence_embeddings: EmbeddingCache | None = None
        self._chunk_vectors_usable = False
        self.query_embeddings: EmbeddingCache | None = None
        self.sentence_tokens: EmbeddingCache | None = None  # TokenEncodings of candidate sentences (token matching)
        self.abstain_below: float | None = None
        self.abstention: Any = None  # a calibrated AbstentionModel (wins over abstain_below)
        self.ranker: Any = None  # a learned SentenceRanker for the index's extractive answers (None: hand weights)
        self._index_lock = threading.Lock()
        self._store: Any = None
        self._background: set[asyncio.Task[Any]] = set()
        self.started = False

    @property
    def generator(self) -> Generator:
        return self.served.generator

    @property
    def index_version(self) -> int | None:
        return self.served.index_version

    @classmethod
    def from_settings(cls, settings: Settings, *, generator: Generator | None = None) -> AgentPipeline:
        """Everything configured but nothing loaded yet (that is :meth:`start`)."""
        config = settings.agent
        served = served_model(settings) if generator is None else None
        generator = generator or served.generator  # type: ignore[union-attr]
        fallback = None
        if generator.backend != "extractive" and config.generator.fallback:
            fallback = create_generator(config.generator, backend="extractive")
        redis = RedisLink(settings)
        writer = redis.log_writer(config.log_stream)
        prompt = load_prompt(config.prompt, config.prompts_dir)
        return cls(settings, generator=generator, fallback=fallback, prompt=prompt, redis=redis, log_writer=writer,
                   index_version=served.index_version if served else None)

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the index and warm its embedder, load the model, connect Redis, start the log writer."""
        await asyncio.to_thread(self._open_index)
        await self.generator.start()
        if self.fallback is not None:
            await self.fallback.start()
        await asyncio.to_thread(self._connect_redis)
        self.log_writer.start()
        if follows_alias(self.settings) and self.config.registry_poll_s > 0:
            self._spawn(self._follow_alias())
        self.started = True

    async def refresh_served_model(self) -> bool:
        """Re-resolve a ``registry:<alias>`` model; if the alias moved, load that version and switch the
        model and its coupled index version together. Requests already running finish on the old model."""
        served = await asyncio.to_thread(served_model, self.settings)
        current = self.generator
        if served.generator.model_version == current.model_version:
            current.aliases = getattr(served.generator, "aliases", [])  # type: ignore[attr-defined]
            return False
        await served.generator.start()
        self.served = served
        log.info("alias %s moved: now serving %s (index version %s)", self.config.generator.model,
                 served.generator.model_version, served.index_version)
        self._spawn(self._close_later(current, self.config.generator.timeout_s))
        return True

    async def _follow_alias(self) -> None:
        while True:
            await asyncio.sleep(self.config.registry_poll_s)
            try:
                await self.refresh_served_model()
            except Exception as exc:  # noqa: BLE001 - keep serving the loaded version
                log.warning("could not follow %s (%s); still serving %s", self.config.generator.model, exc,
                            self.generator.model_version)

    @staticmethod
    async def _close_later(generator: Generator, delay_s: float) -> None:
        await asyncio.sleep(delay_s)  # the longest a request may still be generating with it
        await generator.close()

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _open_index(self) -> Any:
        from llmfti.index import VectorIndex

        with self._index_lock:
            if self.index is not None:
                return self.index
            try:
                index = VectorIndex.open(self.settings)
            except NotFoundError as exc:
                log.warning("no index yet (%s); requests get 503 until it is built", exc)
                return None
            embedder = index.embedder()
            threads = self.config.embedder_threads
            limit_threads(threads)
            embedder.encode(["warm up the query embedder"])
            # token matching (extractive answers): the query's token vectors come with its retrieval encode
            # (not for a query tower: its query and sentence vectors come from two routes, encode_tokens runs one)
            routed = getattr(embedder, "routed", False)
            tokens = (self.config.generator.token_match_candidates > 0 and hasattr(embedder, "encode_tokens")
                      and not routed)
            encode = query_encoder(embedder, self.config.traced_query_encoder)
            if routed:
                encode(["warm up the query route"])
            log.info("queries are encoded %s", "by a traced graph" if encode not in (
                embedder.encode, getattr(embedder, "encode_queries", None)) else "eagerly")
            self._batcher = QueryBatcher(encode, setup=lambda: limit_threads(threads),
                                         encode_tokens=embedder.encode_tokens if tokens else None)
            batcher = self._batcher
            self._sentence_batcher = (QueryBatcher(embedder.encode, setup=lambda: limit_threads(threads))
                                      if routed else batcher)
            fingerprint = embedder_fingerprint(embedder.info)
            self.sentence_embeddings = EmbeddingCache(self._sentence_batcher.embed, fingerprint=fingerprint)
            # the chunks' stored vectors stand in for sentence vectors only when the same embedder made them
            self._chunk_vectors_usable = fingerprint == embedder_fingerprint(index.info)
            self.query_embeddings = EmbeddingCache(
                (lambda text: batcher.embed(text, tokens=True)) if tokens else batcher.embed,
                fingerprint=fingerprint, max_entries=self.config.query_embedding_cache)
            self.sentence_tokens = None if not tokens else EmbeddingCache(
                lambda text: batcher.embed(text, tokens=True), fingerprint=fingerprint,
                max_entries=self.config.generator.token_match_cache)
            self.abstention, self.abstain_below, source = abstention_rule(self.settings, index.name,
                                                                          embedder_fingerprint(index.info))
            log.info("extractive answers abstain by %s (%s)", "model" if self.abstention else self.abstain_below,
                     source)
            self.ranker, source = ranking_rule(self.settings, index.name, embedder_fingerprint(index.info))
            log.info("extractive answers pick sentences by %s", source)
            self.index = index
            return index

    def _connect_redis(self) -> None:
        from llmfti.features.online_store import OnlineStore

        self.redis.start()  # the recovery thread: restarts/reconnects Redis whenever it fails
        if self.redis.connect():
            self._store = OnlineStore(self.settings, self.redis.client())

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
        await asyncio.to_thread(self.log_writer.close)
        await asyncio.to_thread(self.redis.close)
        if self._sentence_batcher is not None and self._sentence_batcher is not self._batcher:
            self._sentence_batcher.close()
        if self._batcher is not None:
            self._batcher.close()
        await self.generator.close()
        if self.fallback is not None:
            await self.fallback.close()
        self.started = False

    def readiness(self) -> dict[str, Any]:
        """Blocking checks for /readyz: index present, model loaded, Redis answering."""
        index = self.index or self._open_index()
        checks = {
            "index": index is not None,
            "model": self.generator.ready(),
            "redis": self.redis.ping(),
        }
        return {
            "ready": all(checks.values()),
            "checks": checks,
            "index_version": (self.index_version or index.version) if index is not None else None,
            "model_version": self.generator.model_version,
            "prompt_id": self.prompt.id,
            "log_queue_records": self.log_writer.pending,  # submitted, not yet durable
            "log_spool_bytes": spool_size(self.log_writer.spool_dir, self.log_writer.spool_name),  # replayed later
            "redis_recoveries": self.redis.recoveries,
            "redis_durability_warning": self.redis.durability_warning,
        }

    # -- the request path -----------------------------------------------------------------------

    def check_size(self, request: AgentRequest) -> None:
        """Cheap checks before any tokenizing: messages present, a question, characters bounded."""
        config = self.config
        if not request.messages:
            raise InvalidInputError("no messages", expected="at least one user message", fix="send a question")
        sizes = [len(m["content"]) for m in request.messages]
        if sum(sizes) > config.max_input_chars:
            largest = max(range(len(sizes)), key=sizes.__getitem__)
            where = self._where(request, largest)
            raise RequestLimitError(
                f"the input is {sum(sizes)} characters, over the limit of {config.max_input_chars} "
                f"({where} alone is {sizes[largest]})",
                param=where, code="input_too_large",
                fix="shorten the messages or drop earlier turns",
            )
        last_user = max((i for i, m in enumerate(request.messages) if m["role"] == "user"), default=None)
        if last_user is None:
            raise InvalidInputError("the request has no user message", expected="at least one message with role "
                                    "'user'", fix="add the question as a user message")
        if not request.messages[last_user]["content"].strip():
            where = self._where(request, last_user)
            raise RequestLimitError(
                f"{where} is empty: there is no question to answer",
                param=where, code="empty_question",
                fix="put the question in the last user message" if request.endpoint != "completions"
                else "send the question as the prompt",
            )

    @staticmethod
    def _where(request: AgentRequest, index: int) -> str:
        return {"completions": "prompt", "responses": "input"}.get(request.endpoint, f"messages.{index}.content")

    def check_limits(self, request: AgentRequest, served: ServedModel | None = None) -> int:
        """Validate counts and sizes; returns the max_tokens to use. Tokenizes: call it from a thread."""
        config = self.config
        generator = (served or self.served).generator
        self.check_size(request)
        if len(request.messages) > config.max_messages:
            raise RequestLimitError(
                f"{len(request.messages)} messages is over the limit of {config.max_messages}",
                param="messages", code="too_many_messages",
                fix="send fewer messages (drop the oldest turns)",
            )
        max_tokens = request.max_tokens or min(config.default_max_tokens, config.max_completion_tokens)
        if max_tokens > config.max_completion_tokens:
            raise RequestLimitError(
                f"max_tokens={max_tokens} is over the limit of {config.max_completion_tokens}",
                param="max_tokens", code="invalid_value",
                fix=f"ask for at most {config.max_completion_tokens} tokens",
            )
        tokens = sum(generator.count_tokens(m["content"]) for m in request.messages)
        if tokens > config.max_input_tokens:
            raise RequestLimitError(
                f"the messages are {tokens} tokens, over the limit of {config.max_input_tokens}",
                param="messages", code="context_length_exceeded",
                fix="shorten the messages or drop earlier turns",
            )
        return max_tokens

    async def prepare(self, request: AgentRequest, served: ServedModel | None = None) -> Turn:
        served = served or self.served
        self.check_size(request)
        # one thread hop for the blocking steps before retrieval: limits (tokenizing) and the user's features
        max_tokens, user_features, missing = await asyncio.to_thread(self._limits_and_features, request, served)
        created_at = now_utc()
        start = time.perf_counter()
        with span("agent.features.on_demand"):
            question = next(m["content"] for m in reversed(request.messages) if m["role"] == "user")
            on_demand = request_features(request.messages, at=created_at)
        request.timings_ms["on_demand_features"] = elapsed_ms(start)

        query = retrieval_query(request.messages, self.config.history_turns)
        hits, index_version, query_vector = await self._retrieve(request, query, served)

        start = time.perf_counter()
        passages = [
            Passage(n=i + 1, chunk_id=h.chunk_id, doc_id=h.doc_id, text=h.text, score=float(h.score))
            for i, h in enumerate(hits)
        ]
        with span("agent.prompt", prompt_id=self.prompt.id) as traced:
            args = (question, passages, user_features, on_demand, request, max_tokens, served.generator)
            if getattr(served.generator, "context_length", None):  # tokenizes: off the event loop
                messages = await asyncio.to_thread(self._fit_prompt, *args)
            else:  # no context limit, nothing to tokenize: a template render costs less than a thread hop
                messages = self._fit_prompt(*args)
            traced.set(passages=len(passages), messages=len(messages))
        generation = GenerationRequest(
            messages=messages, question=question, passages=passages, max_tokens=max_tokens,
            temperature=request.temperature, top_p=request.top_p, seed=request.seed, stop=request.stop,
            embed=self._answer_embed(query, query_vector, hits),
            embed_tokens=self._answer_tokens(query, query_vector),
            abstain_below=self.abstain_below, abstention=self.abstention, ranker=self.ranker,
        )
        request.timings_ms["prompt"] = elapsed_ms(start)
        return Turn(request, question, on_demand, user_features, missing, passages, index_version, messages,
                     generation, created_at, served=served)

    def _limits_and_features(self, request: AgentRequest,
                             served: ServedModel) -> tuple[int, dict[str, Any] | None, bool]:
        """Blocking (one thread hop): :meth:`check_limits`, then the user's features; the request is then
        recorded as served (what /v1/feedback checks). Invalid requests read and record nothing."""
        max_tokens = self.check_limits(request, served)
        try:
            values, missing = self._user_features(request) if request.user_id else (None, False)
        finally:
            self.served_requests.remember(request.request_id, request.tenant)
        return max_tokens, values, missing

    def _user_features(self, request: AgentRequest) -> tuple[dict[str, Any] | None, bool]:
        """The user's online features (blocking). The stage times the Redis read itself: it shares the
        thread hop of the limits check, so it adds no hop of its own."""
        start = time.perf_counter()
        with span("agent.features.user", group=self.config.user_feature_group) as traced:
            try:
                vector = self._read_features(request.user_id, request.tenant)  # type: ignore[arg-type]
                traced.set(missing=vector.missing)
                return vector.values, vector.missing
            except StoreUnavailableError as exc:
                log.debug("user features unavailable: %s", exc)
                request.degraded.append("user_features")
                traced.set(degraded=True, missing=True)
                return None, True
            finally:
                request.timings_ms["user_features"] = elapsed_ms(start)

    def _read_features(self, user_id: str, tenant: str | None) -> Any:
        """The user's online features within the caller's tenant (never another tenant's user)."""
        def read(client: Any) -> Any:
            if self._store is None:
                from llmfti.features.online_store import OnlineStore

                self._store = OnlineStore(self.settings, client)
            return self._store.get(self.config.user_feature_group, user_id, tenant=tenant)

        return self.redis.run(read)

    async def _retrieve(self, request: AgentRequest, question: str,
                        served: ServedModel) -> tuple[list[Any], int | None, Any]:
        """Hits, the index version searched and the query's vector (None when nothing was retrieved; a
        TokenEncoding when token matching is on)."""
        if self.config.retrieval_k == 0:
            return [], None, None
        index = self.index or await asyncio.to_thread(self._open_index)
        if index is None:
            raise StoreUnavailableError(
                f"the index {self.settings.index.name!r} is not built yet",
                fix="build it (llmfti index build PATH); llmfti serve builds the sample docs when it is empty",
            )
        start = time.perf_counter()
        with span("agent.embedding"):
            encoded = await self.query_embeddings.embed_one(question)  # type: ignore[union-attr]
        vector = getattr(encoded, "vector", encoded)
        request.timings_ms["query_embedding"] = elapsed_ms(start)
        with span("agent.retrieval", index=self.settings.index.name, mode=self.config.retrieval_mode,
                  k=self.config.retrieval_k, tenant=request.tenant) as traced:
            hits, version = await asyncio.to_thread(self._search, index, request, question, vector,
                                                    served.index_version)
            traced.set(hits=len(hits), index_version=version)
        return hits, version, encoded

    def _answer_embed(self, query: str, vector: Any, hits: list[Any]) -> Any:
        """The embed function of the request's generator (sentence vectors for extractive answers): the
        sentence cache, told the vectors this request already has: the retrieval query's (the question of
        a single-turn request is the query) and each retrieved chunk's stored one (a sentence that is a
        whole chunk, up to whitespace, is not encoded again: same embedder, same text)."""
        cache = self.sentence_embeddings
        if cache is None:
            return None
        known = {h.text: h.vector for h in hits if getattr(h, "vector", None) is not None}
        if vector is not None:
            known[query] = getattr(vector, "vector", vector)
        if not known:
            return cache.embed
        return lambda texts: cache.embed(texts, known=known)

    def _answer_tokens(self, query: str, encoded: Any) -> Any:
        """The token-vector function of the request's generator (None: token matching off): the sentence
        token cache, told the query's TokenEncoding from its retrieval encode (no second forward pass)."""
        cache = self.sentence_tokens
        if cache is None:
            return None
        if not hasattr(encoded, "tokens"):
            return cache.embed
        return lambda texts: cache.embed(texts, known={query: encoded})

    def _search(self, index: Any, request: AgentRequest, question: str, vector: Any,
                version: int | None) -> tuple[list[Any], int]:
        start = time.perf_counter()
        try:
            result = index.search(
                question, k=self.config.retrieval_k, mode=self.config.retrieval_mode, tenant=request.tenant,
                vector=vector, version=version, with_vectors=self._chunk_vectors_usable,
            )
        except (OSError, RuntimeError) as exc:
            raise StoreUnavailableError(f"index search failed: {exc}", fix="check the index storage") from exc
        request.timings_ms["retrieval"] = elapsed_ms(start)
        return result.hits, result.version

    def _fit_prompt(self, question: str, passages: list[Passage], user: dict[str, Any] | None,
                    on_demand: dict[str, Any], request: AgentRequest, max_tokens: int,
                    generator: Generator) -> list[dict[str, str]]:
        """Render the template; drop the lowest-ranked passages until prompt + answer fit the model.
        Tokenizes: runs on a thread."""
        history = request.messages[:-1] if request.messages[-1]["role"] == "user" else request.messages
        limit = getattr(generator, "context_length", None)
        while True:
            messages = self.prompt.render(question=question, passages=[p.__dict__ for p in passages], user=user,
                                          context=on_demand, history=history)
            if not limit:
                return messages
            tokens = generator.count_tokens(generator.render_prompt(messages))
            if tokens + max_tokens <= limit:
                return messages
            if not passages:
                raise RequestLimitError(
                    f"the prompt is {tokens} tokens; with max_tokens={max_tokens} that is over the model's "
                    f"context of {limit}",
                    param="max_tokens", code="context_length_exceeded",
                    fix="shorten the messages or lower max_tokens",
                )
            passages.pop()

    async def answer(self, request: AgentRequest) -> AgentAnswer:
        """The whole answer (non-streaming)."""
        turn, served = None, self.served  # what serves this request, captured once
        try:
            turn = await self.prepare(request, served)
            start = time.perf_counter()
            with span("agent.generation", backend=served.generator.backend) as traced:
                result, used, reason = await self._generate(turn)
                traced.set(model_version=used.model_version, fallback=reason is not None,
                           completion_tokens=result.completion_tokens)
            request.timings_ms["generation"] = elapsed_ms(start)
            text, stopped = StopMatcher(request.stop).apply(result.text)
            if stopped:
                result.text, result.finish_reason = text, "stop"
                result.completion_tokens = used.count_tokens(text)
            return await self._finish(turn, result, used, reason)
        except BaseException as exc:
            await self._durably(self._log_failure(request, turn, exc, served=served), failing=exc)
            raise

    async def _generate(self, turn: Turn) -> tuple[GenerationResult, Generator, str | None]:
        timeout = self.config.generator.timeout_s
        generator = turn.served.generator
        try:
            return await asyncio.wait_for(generator.generate(turn.generation), timeout), generator, None
        except InvalidInputError:
            raise
        except Exception as exc:  # noqa: BLE001 - any backend failure may fall back
            reason = self._fallback_reason(exc, timeout, generator)
        return await self.fallback.generate(turn.generation), self.fallback, reason  # type: ignore[union-attr]

    def _fallback_reason(self, exc: BaseException, timeout: float, generator: Generator) -> str:
        reason = f"timeout after {timeout:g} s" if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"
        log.warning("generator %s failed (%s)%s", generator.backend, reason,
                    "; falling back to extractive" if self.fallback else "")
        if self.fallback is None:
            raise GenerationError(
                f"the {generator.backend} generator failed: {reason}",
                fix="check the model backend; enable agent.generator.fallback to answer extractively meanwhile",
            ) from exc
        return reason

    async def stream(self, request: AgentRequest) -> AsyncIterator[str | AgentAnswer]:
        """Text deltas as generated, then the :class:`AgentAnswer`. Falls back only before the first delta."""
        turn, served = None, self.served  # what serves this request, captured once
        finished = False
        traced = Span()  # the generation span, once generation starts
        try:
            turn = await self.prepare(request, served)
            start = time.perf_counter()
            traced = start_span("agent.generation", backend=served.generator.backend, streamed=True)
            timeout = self.config.generator.timeout_s
            used, reason = served.generator, None
            source = used.stream(turn.generation)
            try:
                item = await asyncio.wait_for(anext(source), timeout)
            except InvalidInputError:
                raise
            except Exception as exc:  # noqa: BLE001 - nothing sent yet: fall back
                await source.aclose()
                reason = self._fallback_reason(exc, timeout, served.generator)
                used, source = self.fallback, self.fallback.stream(turn.generation)  # type: ignore[union-attr]
                item = await anext(source)
            await self._durably(self._log_started(turn, used, reason))  # before the first byte is sent
            stopper, parts, result = StopMatcher(request.stop), [], None
            try:
                while True:
                    if isinstance(item, GenerationResult):
                        result = item
                        break
                    out = stopper.feed(item)
                    if out:
                        parts.append(out)
                        yield out
                    if stopper.stopped:
                        break
                    item = await asyncio.wait_for(anext(source), timeout)
            except (TimeoutError, GenerationError) as exc:
                raise GenerationError(f"the {used.backend} generator failed while streaming: {exc}",
                                      fix="retry; check the model backend") from exc
            finally:
                await source.aclose()
            tail = stopper.flush()
            if tail:
                parts.append(tail)
                yield tail
            text = "".join(parts)
            if result is None or stopper.stopped:
                prompt = used.render_prompt(turn.messages)
                result = GenerationResult(text=text, finish_reason="stop", prompt_tokens=used.count_tokens(prompt),
                                          completion_tokens=used.count_tokens(text), prompt=prompt,
                                          cited=result.cited if result else [])
            result.text = text
            request.timings_ms["generation"] = elapsed_ms(start)
            traced.set(model_version=used.model_version, fallback=reason is not None,
                       completion_tokens=result.completion_tokens)
            traced.end()
            answer = await self._finish(turn, result, used, reason, streamed=True)
            finished = True
            yield answer
        except BaseException as exc:
            traced.end(exc)
            if not finished:
                await self._durably(self._log_failure(request, turn, exc, streamed=True, served=served), failing=exc)
            raise

    # -- results and logging --------------------------------------------------------------------

    async def _finish(self, turn: Turn, result: GenerationResult, used: Generator, reason: str | None,
                      *, streamed: bool = False) -> AgentAnswer:
        request = turn.request
        start = time.perf_counter()
        degraded = list(dict.fromkeys(request.degraded))
        answer = AgentAnswer(
            request_id=request.request_id,
            text=result.text,
            finish_reason=result.finish_reason,
            prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens,
            citations=citations(turn.generation.passages, result),
            index_version=turn.index_version,
            prompt_id=self.prompt.id,
            model_id=turn.served.generator.model_id,
            model_version=used.model_version,
            timings_ms=request.timings_ms,
            fallback=reason is not None,
            fallback_reason=reason,
            degraded=degraded,
            user_features=turn.user_features,
            messages=turn.messages,
            abstained=result.abstained,
            evidence=result.evidence,
            evidence_features=result.evidence_features,
            candidates=result.candidates,
        )
        record = self._record(request, turn, turn.served, streamed=streamed)
        record.prompt, record.answer = result.prompt, result.text
        record.finish_reason = result.finish_reason
        record.prompt_tokens, record.completion_tokens = result.prompt_tokens, result.completion_tokens
        record.model_version = used.model_version
        record.fallback, record.fallback_reason = reason is not None, reason
        request.timings_ms["log"] = elapsed_ms(start)
        record.timings_ms = dict(request.timings_ms)
        request.timings_ms["total"] = record.total_ms = elapsed_ms(request.started)
        start = time.perf_counter()
        with span("agent.log", streamed=streamed):
            await self._durably(self.log_writer.submit(record))
        request.timings_ms["log_durable_wait"] = elapsed_ms(start)  # in the response and /metrics, not the record
        annotate_request(model_version=used.model_version, fallback=reason is not None)
        return answer

    def _record(self, request: AgentRequest, turn: Turn | None, served: ServedModel, *,
                streamed: bool) -> InferenceRecord:
        record = InferenceRecord(
            request_id=request.request_id,
            created_at=turn.created_at if turn else now_utc(),
            endpoint=request.endpoint,
            model_id=served.generator.model_id,
            model_version=served.generator.model_version,
            prompt_id=self.prompt.id,
            api_key_name=request.api_key_name,
            tenant=request.tenant,
            user_id=request.user_id,
            index_name=self.settings.index.name,
            request_messages=request.messages,
            streamed=streamed,
            degraded=list(dict.fromkeys(request.degraded)),
        )
        annotate_request(request_id=request.request_id, tenant=request.tenant, api_key_name=request.api_key_name,
                         endpoint=request.endpoint, model_id=record.model_id, model_version=record.model_version,
                         prompt_id=record.prompt_id, index=record.index_name,
                         index_version=turn.index_version if turn else None)
        if turn is not None:
            record.index_version = turn.index_version
            record.user_features = turn.user_features
            record.user_features_missing = turn.user_features_missing
            record.on_demand_features = turn.on_demand
            record.query = turn.question
            record.retrieved_chunk_ids = [p.chunk_id for p in turn.passages]
            record.retrieved_scores = [p.score for p in turn.passages]
        return record

    def _log_failure(self, request: AgentRequest, turn: Turn | None, exc: BaseException,
                     *, streamed: bool = False, served: ServedModel) -> Future[str] | None:
        """Requests that fail after validation are logged too (with the error), so served = logged."""
        if isinstance(exc, RequestLimitError | InvalidInputError) and turn is None:
            return None  # rejected as invalid before any work: not a served request
        record = self._record(request, turn, served, streamed=streamed)
        if isinstance(exc, asyncio.CancelledError | GeneratorExit):
            record.error, record.status = "client_disconnected", 499
        else:
            record.error = getattr(exc, "code", type(exc).__name__)
            record.status = (400 if isinstance(exc, InvalidInputError)
                             else 503 if isinstance(exc, StoreUnavailableError | GenerationError) else 500)
        record.timings_ms = dict(request.timings_ms)
        record.total_ms = elapsed_ms(request.started)
        with span("agent.log", streamed=streamed, error=record.error):
            return self.log_writer.submit(record)

    def _log_started(self, turn: Turn, used: Generator, reason: str | None) -> Future[str]:
        """A streamed request's first record, written before its first byte; the final one replaces it."""
        record = self._record(turn.request, turn, turn.served, streamed=True)
        record.prompt, record.model_version = used.render_prompt(turn.messages), used.model_version
        record.fallback, record.fallback_reason = reason is not None, reason
        record.error, record.timings_ms = INCOMPLETE, dict(turn.request.timings_ms)
        return self.log_writer.submit(record)

    async def _durably(self, accepted: Future[str] | None, *, failing: BaseException | None = None) -> None:
        """Wait (off the event loop) until a log record is durable, before the response goes out.

        Skipped with ``logs.durable_ack: false`` and for a client that went away (nothing is sent).
        For a failed request the original error wins over a logging failure."""
        if accepted is None or isinstance(failing, asyncio.CancelledError | GeneratorExit):
            return
        try:
            await wait_durable(accepted, self.settings)
        except StoreUnavailableError as error:
            if failing is None:
                raise
            log.error("could not log failed request durably: %s", error)
