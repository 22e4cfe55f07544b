"""Schema fuzz of the whole OpenAPI of a real ``llmfti serve``: no input may cause a 5xx.

Schemathesis (its CLI, as a user runs it) reads ``/openapi.json`` of the served process and sends
generated requests to every operation (valid and invalid bodies, parameters and headers; a few
dozen per operation in the short form, a few hundred in the full one), with the key of the
default tenant. Checks: ``not_a_server_error`` (the goal: 0 5xx), and the schema checks
``response_schema_conformance``, ``content_type_conformance``, ``status_code_conformance``
(every response is declared, including the SSE streams and ``/metrics``).

Schemathesis cannot read inside an SSE body or the Prometheus text, so the scenario then checks
them itself: every event of a streamed chat and text completion (with ``include_usage``) is
validated against the pydantic chunk models the OpenAPI names, and ``/metrics`` is parsed by
``prometheus_client``'s parser.

Measured: operations fuzzed, test cases generated, operations where some case got a 5xx (goal: 0),
failed schema checks per operation, valid cases accepted per operation (the fuzz reaches the
pipeline, not only validation), SSE events validated / invalid, metric families parsed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks.chaos.harness import ScenarioResult, ServedAgent, chat_body, scratch_dir

NAME = "openapi_fuzz"
GOAL = "schema fuzz of every OpenAPI operation of a served process: 0 5xx; SSE and /metrics bodies valid"
CHECKS = "not_a_server_error,response_schema_conformance,content_type_conformance,status_code_conformance"
AGENT_OPERATIONS = ("/v1/", "/healthz", "/readyz", "/metrics")  # the agent's own API (schema checks must pass)


def schemathesis_exe() -> str:
    return str(Path(sys.executable).with_name("schemathesis"))


def fuzz(url: str, folder: Path, *, max_examples: int, seed: int = 7, timeout_s: float = 1200) -> dict[str, Any]:
    """Run ``schemathesis run`` against ``url``; returns its JSON report, summarised."""
    report = folder / "schemathesis.json"
    args = [schemathesis_exe(), "run", f"{url}/openapi.json", "--checks", CHECKS, "--header",
            "Authorization: Bearer key-default", "--max-examples", str(max_examples), "--seed", str(seed),
            "--workers", "1", "--generation-database", "none", "--request-timeout", "60", "--no-color",
            "--report", "json", "--report-json-path", str(report)]
    out = subprocess.run(args, capture_output=True, text=True, timeout=timeout_s, check=False)
    if not report.exists():
        raise RuntimeError(f"schemathesis wrote no report (exit {out.returncode}): {out.stdout[-2000:]}"
                           f"{out.stderr[-2000:]}")
    data = json.loads(report.read_text())
    failures = data.get("failures") or []
    return {
        "exit_code": out.returncode,
        "operations": data["operations"]["tested"],
        "cases": data["test_cases"]["generated"],
        # ST101 = not_a_server_error: one entry per distinct failing case kind, with the operations
        "server_errors": [f"{op} ({f['title']})" for f in failures if f["code"] == "ST101" for op in f["operations"]],
        "failed_checks": {f"{f['code']} {f['title']}": f["operations"] for f in failures},
        "accepted_per_operation": {op: sum(phase.get("accepted", 0) for phase in rates.values())
                                   for op, rates in (data.get("valid_rates") or {}).items()},
        "errors": [str(e)[:300] for e in data.get("errors") or []],
        "stdout_tail": out.stdout[-3000:] if failures or data.get("errors") else "",
    }


def check_streams_and_metrics(url: str) -> dict[str, Any]:
    """Validate every SSE event against the chunk models and parse /metrics."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    from agents.api.protocol import ChatCompletionChunk, CompletionChunk, ErrorResponse

    headers = {"authorization": "Bearer key-default"}
    valid, invalid = 0, []
    requests = [
        ("/v1/chat/completions", ChatCompletionChunk,
         chat_body("How do I roll back an index?", stream=True, stream_options={"include_usage": True})),
        ("/v1/completions", CompletionChunk, {"model": "llmfti-extractive", "prompt": "Which port does the agent "
                                              "listen on?", "stream": True, "stream_options": {"include_usage": True}}),
    ]
    with httpx.Client(base_url=url, timeout=60, headers=headers) as client:
        for path, model, body in requests:
            response = client.post(path, json=body)
            if response.status_code != 200 or not response.headers["content-type"].startswith("text/event-stream"):
                invalid.append(f"{path}: {response.status_code} {response.headers.get('content-type')}")
                continue
            events = [b[len("data: "):] for b in response.text.split("\n\n") if b.startswith("data: ")]
            if events[-1] != "[DONE]":
                invalid.append(f"{path}: no [DONE]")
            for payload in events[:-1]:
                data = json.loads(payload)
                try:
                    (ErrorResponse if "error" in data else model).model_validate(data)
                    valid += 1
                except ValueError as exc:
                    invalid.append(f"{path}: {str(exc)[:200]}")
        metrics = client.get("/metrics")
        families = list(text_string_to_metric_families(metrics.text))
    return {"sse_events_valid": valid, "sse_events_invalid": invalid, "metrics_status": metrics.status_code,
            "metric_families": len(families),
            "metrics_content_type": metrics.headers.get("content-type")}


def run(full: bool = False) -> ScenarioResult:
    with scratch_dir(NAME) as folder:
        with ServedAgent(folder / "data") as agent:  # serve builds the sample docs into the empty index
            fuzzed = fuzz(agent.url, folder, max_examples=200 if full else 20)
            bodies = check_streams_and_metrics(agent.url)
            ready = agent.readyz()[0] == 200
    measured = {
        "operations": fuzzed["operations"],
        "cases": fuzzed["cases"],
        "operations_with_5xx": len(fuzzed["server_errors"]),
        "server_errors": fuzzed["server_errors"],
        "failed_checks": fuzzed["failed_checks"],
        "failed_checks_agent_api": {check: ops for check, ops in fuzzed["failed_checks"].items()
                                    if "ST101" not in check and any(o.split(" ")[1].startswith(AGENT_OPERATIONS)
                                                                    for o in ops)},
        "valid_cases_accepted": fuzzed["accepted_per_operation"],
        "schemathesis_errors": fuzzed["errors"],
        "schemathesis_exit_code": fuzzed["exit_code"],
        **bodies,
        "ready_after": ready,
    }
    passed = (not fuzzed["server_errors"] and not measured["failed_checks_agent_api"] and fuzzed["cases"] > 0
              and not fuzzed["errors"]
              and not bodies["sse_events_invalid"] and bodies["metric_families"] > 0 and ready)
    notes = fuzzed["stdout_tail"] if fuzzed["server_errors"] or measured["failed_checks_agent_api"] else ""
    return ScenarioResult(NAME, GOAL, measured, passed, notes)
