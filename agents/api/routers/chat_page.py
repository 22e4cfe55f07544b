"""``GET /`` and ``GET /chat``: a small chat page for a person (one HTML file, plain JS/CSS, no build step).

The page streams answers from ``/v1/chat/completions``, shows citations with their passages, the
index/model/prompt versions and fallback/degraded flags, and posts thumbs up/down (with an optional
correction) to ``/v1/feedback``. It calls the API like any client: with the API key typed into it
(kept in the browser's localStorage), or with none when the server runs ``--dev``.

Served with a Content-Security-Policy that allows only this page's own inline script and style (by
hash) and same-origin requests, so even a rendering mistake could not run injected script.
"""

from __future__ import annotations

import base64
import hashlib
import re
from functools import cache
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

PAGE = Path(__file__).resolve().parent.parent / "static" / "chat.html"

router = APIRouter(include_in_schema=False)


def _hashes(html: str, tag: str) -> str:
    blocks = re.findall(rf"<{tag}>(.*?)</{tag}>", html, flags=re.DOTALL)
    return " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(b.encode()).digest()).decode()}'" for b in blocks)


@cache
def _page() -> tuple[bytes, dict[str, str]]:
    """The page and its headers, read once per process."""
    html = PAGE.read_text(encoding="utf-8")
    policy = (f"default-src 'none'; script-src {_hashes(html, 'script')}; style-src {_hashes(html, 'style')}; "
              "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
    headers = {"Content-Security-Policy": policy, "X-Content-Type-Options": "nosniff",
               "Referrer-Policy": "no-referrer", "Cache-Control": "no-cache"}
    return html.encode("utf-8"), headers


@router.get("/")
@router.get("/chat")
async def chat_page() -> HTMLResponse:
    body, headers = _page()
    return HTMLResponse(body, headers=headers)
