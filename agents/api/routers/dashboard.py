"""``GET /dashboard``: the operator's dashboard (admin keys only; any caller in dev mode).

The page is rendered by :func:`llmfti.monitoring.dashboard.render_dashboard` in a worker thread
(it reads LanceDB and draws with matplotlib), so the event loop never blocks on it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from typing import Annotated

from fastapi import APIRouter, Header
from fastapi.responses import HTMLResponse, JSONResponse

from agents.api.deps import State

router = APIRouter()


def _is_admin(state: State, authorization: str | None) -> bool:
    """The key authenticates (else AuthenticationError: 401) and is configured with ``admin: true``."""
    principal = state.authenticator.authenticate(authorization)
    if state.authenticator.dev:
        return True
    digest = hashlib.sha256((authorization or "").partition(" ")[2].strip().encode("utf-8")).digest()
    admin = False
    for key in state.settings.agent.api_keys:  # no early exit, like the authenticator
        if key.admin and hmac.compare_digest(digest, bytes.fromhex(key.sha256)):
            admin = principal.name == key.name
    return admin


@router.get("/dashboard", response_class=HTMLResponse, include_in_schema=True)
async def dashboard(state: State, authorization: Annotated[str | None, Header()] = None) -> HTMLResponse:
    if not _is_admin(state, authorization):
        return JSONResponse(status_code=403, content={"error": {
            "message": "this API key may not read the dashboard; expected: a key configured with admin: true; "
            "fix: use an operator key (agent.api_keys[].admin)",
            "type": "permission_error", "param": None, "code": "not_admin"}})
    from llmfti.monitoring.dashboard import render_dashboard

    page = await asyncio.to_thread(render_dashboard, state.settings)
    return HTMLResponse(page)
