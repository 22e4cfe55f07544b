"""A rate-limited client that honours Retry-After gets through after the advertised wait.

A real ``llmfti serve`` with one key limited to ``LIMIT`` requests per window (the window is the
``agent.rate_limit_window_s`` setting: 4 s in the short form, 60 s in the full one). The client
hammers far past the limit (every rejected request is a 429 with ``Retry-After``), keeps hammering
for a while, then sleeps exactly the last advertised ``Retry-After`` and tries again: it must be
answered. Repeated for several cycles, with the hammering in between.

Measured: requests accepted before the first 429 (``LIMIT``; more only if the burst outlasted the
window), 429s sent, the advertised
waits, and the cycles in which the request after the wait succeeded (goal: all).
"""

from __future__ import annotations

import time

from benchmarks.chaos.harness import LIMITED_KEY, ScenarioResult, ServedAgent, limited_api_keys, scratch_dir

NAME = "retry_after"
GOAL = "a client that waits the advertised Retry-After succeeds (rejected requests do not count)"


def run(full: bool = False) -> ScenarioResult:
    import httpx

    limit, window_s, cycles, hammer = (10, 60.0, 2, 70) if full else (5, 4.0, 3, 25)
    env = {"LLMFTI_AGENT__API_KEYS": limited_api_keys(limit), "LLMFTI_AGENT__RATE_LIMIT_WINDOW_S": str(window_s)}
    accepted_first = 0
    rejected = 0
    waits: list[float] = []
    after_wait: list[int] = []
    problems: list[str] = []
    with scratch_dir(NAME) as folder, ServedAgent(folder / "data", env=env) as agent, \
            httpx.Client(base_url=agent.url, timeout=30,
                         headers={"authorization": f"Bearer {LIMITED_KEY}"}) as client:
        statuses = [client.get("/v1/models").status_code for _ in range(limit + hammer)]
        accepted_first = statuses.count(200)
        if statuses[:limit] != [200] * limit:
            problems.append(f"first {limit} requests: {statuses[:limit]}")
        for _ in range(cycles):
            last = None
            for _ in range(hammer):  # hammer on while limited: none of these may count
                response = client.get("/v1/models")
                if response.status_code == 429:
                    rejected += 1
                    last = response
                elif response.status_code != 200:
                    problems.append(f"unexpected {response.status_code}: {response.text[:120]}")
            if last is None:
                problems.append("the hammering was never limited")
                continue
            wait = float(last.headers["Retry-After"])
            waits.append(wait)
            time.sleep(wait)
            after_wait.append(client.get("/v1/models").status_code)
            # use up the rest of the window again so the next cycle starts limited
            while client.get("/v1/models").status_code == 200:
                pass
    succeeded = after_wait.count(200)
    measured = {
        "limit": limit,
        "window_s": window_s,
        "accepted_before_limit": accepted_first,
        "rejected_429": rejected,
        "advertised_waits_s": waits,
        "cycles": cycles,
        "succeeded_after_advertised_wait": succeeded,
        "statuses_after_wait": after_wait,
    }
    passed = accepted_first >= limit and succeeded == cycles and not problems
    return ScenarioResult(NAME, GOAL, measured, passed, "; ".join(problems[:3]))
