"""The chat page in a real headless Chromium against a real ``llmfti serve`` process: type a question,
see the answer stream in with its citations and versions, rate it, drain, find the feedback row.

Needs Debian's ``chromium`` and the ``playwright`` package: ``scripts/install-browser.sh`` (as root).
Skips, saying so, when either is missing. Saves a screenshot to ``benchmarks/results/chat_page.png``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.agent_support import api_keys_setting, data_dir_with_index, free_port, wait_http

CHROMIUM = os.environ.get("LLMFTI_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOT = Path(__file__).resolve().parent.parent / "benchmarks" / "results" / "chat_page.png"
LLMFTI = Path(sys.executable).with_name("llmfti")
QUESTION = "How do I roll back the index?"
TIMEOUT_MS = 60_000


def _browser_missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (scripts/install-browser.sh installs it)"
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        return f"no chromium at {CHROMIUM} (scripts/install-browser.sh installs Debian's, as root)"
    return None


pytestmark = pytest.mark.skipif(_browser_missing() is not None, reason=str(_browser_missing()))


class Served:
    """``llmfti serve`` as a subprocess on a copy of the small test index."""

    def __init__(self, data_dir: Path, *, dev: bool, env: dict[str, str] | None = None):
        self.data_dir = data_dir_with_index(data_dir)
        self.port = free_port()
        self.env = {**os.environ, "LLMFTI_DATA_DIR": str(self.data_dir), "HF_HUB_OFFLINE": "1", **(env or {})}
        self.env = {k: v for k, v in self.env.items() if not k.startswith("OTEL_")}
        if not dev:
            self.env["LLMFTI_AGENT__API_KEYS"] = json.dumps(api_keys_setting())
        args = [str(LLMFTI), "serve", "--port", str(self.port), "--log-level", "warning", "--json"]
        self.proc = subprocess.Popen(args + (["--dev"] if dev else []), env=self.env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> Served:
        try:
            wait_http(self.url + "/readyz", timeout_s=180, proc=self.proc)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        from llmfti.features.embedded_redis import EmbeddedRedis

        redis = EmbeddedRedis(self.data_dir)
        if redis.ping():  # the server is gone: do not leave its embedded Redis behind
            redis.stop(save=False)

    def drain(self) -> dict:
        """What ``llmfti logs drain`` does, in this process: Redis stream + spool -> LanceDB tables."""
        from llmfti.config import load_settings
        from pipelines.drain_logs import drain_logs

        return drain_logs(load_settings(data_dir=self.data_dir))


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def dev_server(tmp_path_factory):
    served = Served(tmp_path_factory.mktemp("chat-page-dev") / "data", dev=True).start()
    try:
        yield served
    finally:
        served.stop()


def _ask(page, question: str):
    """Type and send ``question``; returns the assistant turn once it finished (or failed)."""
    turns = page.locator("section.turn.assistant")
    before = turns.count()
    page.fill("#question", question)
    page.press("#question", "Enter")
    turn = turns.nth(before)
    turn.locator("xpath=self::*[@data-state]").wait_for(timeout=TIMEOUT_MS)
    return turn


def _rows(served: Served, table: str, column: str, value: str) -> list[dict]:
    from llmfti.config import load_settings
    from pipelines.drain_logs import open_feedback_table, open_log_table

    settings = load_settings(data_dir=served.data_dir)
    opened = open_feedback_table(settings) if table == "feedback" else open_log_table(settings)
    return [r for r in opened.to_arrow().to_pylist() if r[column] == value]


def test_ask_stream_cite_rate_and_find_the_feedback_row(browser, dev_server):
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    response = page.goto(dev_server.url + "/")
    assert response.ok and "script-src 'sha256-" in response.headers["content-security-policy"]
    # predicates are functions, not strings: the page's CSP forbids eval'ing strings
    page.wait_for_function("() => document.querySelector('#status').textContent.startsWith('ready')",
                           timeout=TIMEOUT_MS)
    status = page.text_content("#status")
    assert "index v" in status and "prompt rag_answer@" in status
    assert page.locator("#model option").all_text_contents() == ["llmfti-extractive"]

    page.fill("#user-id", "u-page")
    page.press("#user-id", "Tab")  # change event: kept in localStorage
    # count the separate text updates of the answer while it streams
    page.evaluate("""() => {
        window.textUpdates = 0;
        new MutationObserver((records) => {
            for (const r of records) if (r.target.classList && r.target.classList.contains('text')
                && r.target.closest('.turn.assistant')) window.textUpdates++;
        }).observe(document.querySelector('#conversation'), {childList: true, subtree: true, characterData: true});
    }""")
    with page.expect_response(lambda r: r.url.endswith("/v1/chat/completions")) as answered:
        turn = _ask(page, QUESTION)
    request_id = answered.value.headers["x-request-id"]
    assert turn.get_attribute("data-state") == "done", turn.inner_text()
    answer = turn.locator(".text").text_content()
    assert "rollback" in answer
    assert page.evaluate("window.textUpdates") >= 2  # streamed in pieces, not set once at the end

    cited = turn.locator("li.citation")
    assert cited.count() >= 1
    rollback = turn.locator("li.citation", has_text="rollback.md")
    assert "restores an older index version" in rollback.locator(".passage").first.text_content()
    tags = turn.locator(".meta .tag").all_text_contents()
    assert f"request {request_id}" in tags
    assert any(t.startswith("index v") for t in tags) and any(t.startswith("prompt rag_answer@") for t in tags)
    assert any(t.startswith("model ") for t in tags)
    assert not any(t.startswith(("fallback", "degraded")) for t in tags)

    turn.get_by_label("correction").fill("Run llmfti index rollback with the version to restore.")
    turn.get_by_label("thumbs up").click()
    turn.locator(".feedback .done", has_text="recorded").wait_for(timeout=TIMEOUT_MS)
    feedback_id = turn.locator(".feedback").get_attribute("data-feedback-id")
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    print(f"chat page screenshot: {SCREENSHOT}")
    assert errors == []

    deadline = time.monotonic() + 60
    while True:  # the feedback writer hands records to Redis in the background
        dev_server.drain()
        rows = _rows(dev_server, "feedback", "feedback_id", feedback_id)
        if rows or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert len(rows) == 1, f"feedback {feedback_id} not drained"
    row = rows[0]
    assert row["request_id"] == request_id and row["rating"] == 1 and row["user_id"] == "u-page"
    assert row["correction"] == "Run llmfti index rollback with the version to restore."
    (logged,) = _rows(dev_server, "inference_log", "request_id", request_id)
    assert logged["user_id"] == "u-page" and logged["streamed"] is True

    page.reload()  # the user id is remembered
    assert page.input_value("#user-id") == "u-page"
    page.close()


def test_model_and_user_text_is_rendered_as_text_never_as_markup(browser, dev_server):
    page = browser.new_page()
    page.goto(dev_server.url + "/chat")
    page.wait_for_function("() => document.querySelector('#model option')", timeout=TIMEOUT_MS)
    hostile = "<img src=x onerror=\"window.pwned=1\"><b>bold</b> How do I roll back the index?"
    turn = _ask(page, hostile)
    assert turn.get_attribute("data-state") == "done"
    assert page.locator("section.turn.user .text").last.text_content() == hostile
    assert page.locator("#conversation img, #conversation b").count() == 0
    assert page.evaluate("window.pwned") is None
    page.close()


@pytest.mark.slow  # a second server process
def test_with_api_keys_the_page_asks_for_a_key_remembers_it_and_flags_a_fallback(browser, tmp_path):
    # the model backend is an upstream that is not there: every answer falls back to extractive
    upstream = f"http://127.0.0.1:{free_port()}/v1"
    served = Served(tmp_path / "data", dev=False, env={
        "LLMFTI_AGENT__GENERATOR__BACKEND": "openai", "LLMFTI_AGENT__GENERATOR__BASE_URL": upstream,
        "LLMFTI_AGENT__GENERATOR__MODEL": "gone", "LLMFTI_AGENT__GENERATOR__SERVED_NAME": "llmfti-gone",
        "LLMFTI_AGENT__GENERATOR__TIMEOUT_S": "10"}).start()
    try:
        page = browser.new_page()
        page.goto(served.url + "/")
        page.wait_for_function("() => document.querySelector('#model option')", timeout=TIMEOUT_MS)
        assert page.locator("#model option").all_text_contents() == ["(enter an API key)"]
        turn = _ask(page, QUESTION)
        assert turn.get_attribute("data-state") == "failed"
        assert "missing API key" in turn.locator(".error").text_content()

        page.fill("#api-key", "key-acme")
        page.press("#api-key", "Tab")
        page.wait_for_function("() => document.querySelector('#model option').value === 'llmfti-gone'",
                               timeout=TIMEOUT_MS)
        turn = _ask(page, "When do Acme launches happen?")
        assert turn.get_attribute("data-state") == "done", turn.inner_text()
        assert "Tuesday" in turn.locator(".text").text_content()
        assert all("acme" in c for c in turn.locator("li.citation summary").all_text_contents())  # the key's tenant
        flags = turn.locator(".meta .tag.flag").all_text_contents()
        assert len(flags) == 1 and flags[0].startswith("fallback: ") and "Connect" in flags[0], flags
        page.reload()
        assert page.input_value("#api-key") == "key-acme"
        page.close()
    finally:
        served.stop()
