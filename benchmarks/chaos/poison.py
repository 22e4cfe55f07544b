"""Poison requests among concurrent good ones: a bad request fails alone, with a clear 4xx.

A real ``llmfti serve`` (index with documents of two tenants, acme and globex) gets good chat
requests from both tenants' keys, with poison requests of every kind mixed in at the same time:
a lone UTF-16 surrogate in the user message, one word of 100,000 (and of 50,000) characters, a
malformed ``response_format`` (a string, a list, a number), JSON that does not parse, a body
without a JSON content-type, an empty question and a chunked body over the size limit.

Measured: good requests answered 200 (goal: all; **collateral errors: 0**), each poison's status
(goal: its documented 4xx, never a 5xx), and whether the served process stayed healthy.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from benchmarks.chaos.harness import (
    ScenarioResult,
    ServedAgent,
    build_index,
    chat_body,
    load,
    scratch_dir,
    write_docs,
)

NAME = "poison"
GOAL = "one poison request among 100 concurrent good ones (two tenants): 0 collateral errors, every poison a 4xx"
TENANT_DOCS = {
    "acme": {"acme.md": "# Acme rockets\n\nThe Acme rocket engine burns liquid oxygen and kerosene. "
             "Acme launches happen every Tuesday.\n"},
    "globex": {"globex.md": "# Globex formula\n\nThe Globex secret formula is stored in vault seven. "
               "Only Globex engineers may open the vault.\n"},
}
QUESTIONS = {"acme": "What does the Acme rocket engine burn?", "globex": "Where is the Globex formula stored?"}
MAX_REQUEST_BYTES = 400_000


def _raw(text: str) -> bytes:
    return text.encode("utf-8")


# name -> (body: dict is sent as JSON, bytes raw with a JSON content-type; expected status)
POISONS: dict[str, tuple[Any, int]] = {
    "lone_surrogate": (_raw('{"model":"llmfti-extractive","messages":[{"role":"user","content":"\\ud800 lens"}]}'),
                       400),
    "huge_word_100k": (chat_body("a" * 100_000 + " lens"), 413),
    "huge_word_50k": (chat_body("b" * 50_000 + " lens"), 400),
    "response_format_string": (chat_body("hi", response_format="json_object"), 400),
    "response_format_list": (chat_body("hi", response_format=["json"]), 400),
    "response_format_number": (chat_body("hi", response_format=1), 400),
    "bad_json": (b'{"model": "llmfti-extractive",\n "messages": [}', 400),
    "empty_question": (chat_body("   "), 400),
}


def _post_raw(url: str, body: Any, headers: dict[str, str]) -> tuple[int, str]:
    import httpx

    with httpx.Client(base_url=url, timeout=60) as client:
        if isinstance(body, dict):
            response = client.post("/v1/chat/completions", json=body, headers=headers)
        else:
            response = client.post("/v1/chat/completions", content=body,
                                   headers={**headers, "content-type": "application/json"})
        return response.status_code, response.text


def run(full: bool = False) -> ScenarioResult:
    good_total = 100 if full else 48
    clients = 16 if full else 8
    rounds = 3 if full else 1  # every poison is sent this many times, spread through the load
    poison_names = list(POISONS)
    # request i: a poison at evenly spaced positions, else a good request of acme or globex
    plan: dict[int, str] = {}
    total = good_total + rounds * len(poison_names)
    step = total // (rounds * len(poison_names))
    for n in range(rounds * len(poison_names)):
        plan[n * step + step // 2] = poison_names[n % len(poison_names)]

    def tenant_of(i: int) -> str:
        return "acme" if i % 2 == 0 else "globex"

    def body(i: int) -> Any:
        if i in plan:
            return POISONS[plan[i]][0]
        return chat_body(f"{QUESTIONS[tenant_of(i)]} (#{i})")

    def key(i: int) -> str:
        return f"key-{tenant_of(i)}"

    with scratch_dir(NAME) as folder:
        data_dir = folder / "data"
        for tenant, docs in TENANT_DOCS.items():
            build_index(data_dir, write_docs(folder / "docs" / tenant, docs), tenant=tenant)
        env = {"LLMFTI_AGENT__MAX_REQUEST_BYTES": str(MAX_REQUEST_BYTES)}
        with ServedAgent(data_dir, env=env) as agent:
            outcomes = load(agent.url, clients=clients, requests=total, key=key, body=body)
            # the chunked oversized body and a body without a content-type, sent beside more good load
            import threading

            extra: dict[str, tuple[int, str]] = {}

            def chunked() -> None:
                import httpx

                def pieces():
                    for _ in range(MAX_REQUEST_BYTES // 10_000 + 5):
                        yield b"x" * 10_000

                with httpx.Client(base_url=agent.url, timeout=60) as client:
                    r = client.post("/v1/chat/completions", content=pieces(),
                                    headers={"authorization": "Bearer key-acme", "content-type": "application/json"})
                    extra["chunked_over_limit"] = (r.status_code, r.text)
                    r = client.post("/v1/chat/completions", content=json.dumps(chat_body("hi")).encode(),
                                    headers={"authorization": "Bearer key-globex"})
                    extra["no_content_type"] = (r.status_code, r.text)

            side = threading.Thread(target=chunked)
            side.start()
            more = load(agent.url, clients=4, requests=16, key=key, body=lambda i: chat_body(QUESTIONS[tenant_of(i)]))
            side.join()
            healthy = agent.readyz()[0] == 200

    good = [o for o in outcomes if o.index not in plan] + more
    collateral = [o for o in good if not o.ok]
    poison_status: dict[str, list[int]] = {}
    wrong: list[str] = []
    for o in outcomes:
        if o.index in plan:
            name = plan[o.index]
            poison_status.setdefault(name, []).append(o.status)
            if o.status != POISONS[name][1]:
                wrong.append(f"{name}: {o.status} {str(o.body)[:160]}")
    expected_extra = {"chunked_over_limit": 413, "no_content_type": 400}
    for name, (status, text) in extra.items():
        poison_status[name] = [status]
        if status != expected_extra[name]:
            wrong.append(f"{name}: {status} {text[:160]}")
    measured = {
        "good_requests": len(good),
        "good_ok": len(good) - len(collateral),
        "collateral_errors": len(collateral),
        "collateral_statuses": dict(Counter(o.status for o in collateral)),
        "poison_requests": sum(len(v) for v in poison_status.values()),
        "poison_statuses": {k: sorted(set(v)) for k, v in poison_status.items()},
        "poison_5xx": sum(1 for v in poison_status.values() for s in v if s >= 500),
        "poison_wrong_status": wrong,
        "ready_after": healthy,
    }
    passed = not collateral and not wrong and measured["poison_5xx"] == 0 and healthy
    notes = "" if passed else "; ".join([*(f"{o.status} {o.error}" for o in collateral[:3]), *wrong[:3]])
    return ScenarioResult(NAME, GOAL, measured, passed, notes)
