"""``POST /v1/feedback`` without routing: check the rating, hand a record to the feedback writer.

The record goes the inference log's way (Redis stream, spool file when Redis is down) and never
blocks the event loop. The request must have been served to the caller's tenant (checked with
:class:`agents.served_requests.ServedRequests`, which knows a request from the moment it is
accepted, before any drain): otherwise 404, whether it never existed or is another tenant's.
"""

from __future__ import annotations

import asyncio
import re

from agents.api.auth import Caller
from agents.api.protocol import FeedbackRequest, FeedbackResponse, check_encodable
from agents.redis_link import RedisLink, wait_durable
from agents.served_requests import ServedRequests
from llmfti.config import Settings
from llmfti.errors import NotFoundError, RequestLimitError
from llmfti.feedback import FEEDBACK_SPOOL, RATINGS, FeedbackRecord, new_feedback_id, request_id_of
from llmfti.inference_log import now_utc

REQUEST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


class FeedbackService:
    def __init__(self, settings: Settings, redis: RedisLink, served: ServedRequests):
        self.max_chars = settings.agent.max_feedback_chars
        self.served = served
        self.settings = settings
        self.writer = redis.log_writer(settings.agent.feedback_stream, spool_name=FEEDBACK_SPOOL,
                                       record_type=FeedbackRecord)

    def start(self) -> None:
        self.writer.start()

    def close(self) -> None:
        self.writer.close()

    def check(self, body: FeedbackRequest) -> str:
        """The request id the feedback is about; raises a 400 naming the field, the limit and the fix."""
        check_encodable(body)
        request_id = request_id_of(body.request_id)
        if not REQUEST_ID.match(request_id):
            raise RequestLimitError(
                f"request_id {body.request_id[:80]!r} is not a request id",
                param="request_id", code="invalid_value",
                expected="1-128 letters, digits or ._:- (e.g. req-3f2a...)",
                fix="send the x-request-id header or the id of the response you are rating",
            )
        if body.rating not in RATINGS:
            raise RequestLimitError(
                f"rating {body.rating} is not allowed", param="rating", code="invalid_value",
                expected="-1 (bad), 0 (neutral) or 1 (good)", fix="send one of -1, 0, 1",
            )
        for name, text in (("correction", body.correction), ("comment", body.comment)):
            if text is not None and len(text) > self.max_chars:
                raise RequestLimitError(
                    f"{name} is {len(text)} characters, over the limit of {self.max_chars}",
                    param=name, code="invalid_value", fix=f"shorten the {name}",
                )
            if name == "correction" and text is not None and not text.strip():
                raise RequestLimitError("correction is empty", param="correction", code="invalid_value",
                                        fix="leave it out, or send the answer that should have been given")
        return request_id

    async def submit(self, body: FeedbackRequest, caller: Caller) -> FeedbackResponse:
        """Answered only once the record is durable (Redis stream with AOF fsync, or the fsync'd spool)."""
        request_id = self.check(body)
        if not await asyncio.to_thread(self.served.belongs_to, request_id, caller.principal.tenant):
            error = NotFoundError(
                f"no request {request_id!r} was served to this API key's tenant",
                fix="rate a response you received: send its x-request-id header or its id (chatcmpl-...)",
            )
            error.code, error.param = "request_not_found", "request_id"  # type: ignore[attr-defined]
            raise error
        created = now_utc()
        record = FeedbackRecord(
            feedback_id=new_feedback_id(),
            request_id=request_id,
            created_at=created,
            rating=body.rating,
            correction=body.correction,
            comment=body.comment,
            api_key_name=caller.principal.name,
            tenant=caller.principal.tenant,
            user_id=caller.user_header,
        )
        await wait_durable(self.writer.submit(record), self.settings)
        return FeedbackResponse(id=record.feedback_id, created=int(created.timestamp()), request_id=request_id,
                                rating=body.rating)
