"""Two tenants with colliding document ids, randomized queries, interleaved rebuilds.

Tenants ``acme`` and ``globex`` each index a folder ``docs/`` holding files of the same names
(``faq.md``, ``pricing.md``, ...: every document id collides) with different, tenant-specific
facts, built by the real ``llmfti index build --tenant T``. A real ``llmfti serve`` then gets
randomized questions (about either tenant's facts, so half of them tempt a leak) with each
tenant's API key, while both tenants' folders are changed (a document edited, one added, one
removed) and rebuilt, interleaved with the load. Every request names a user id that exists only
in the default tenant's online store (the sample users, materialized by ``llmfti features
pipeline users``); a few requests with the default tenant's key read those users (the control).

Measured: requests per tenant and failures (goal 0); citations whose chunk belongs to another
tenant (goal **0**; the owner of every chunk id is read from every published index version);
requests whose prompt got another tenant's user features (goal **0**, from the drained inference
log); documents lost or stale after the rebuilds (goal **0**: each tenant's index holds exactly
its folder's documents, each with its latest text).
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.chaos.harness import (
    ScenarioResult,
    ServedAgent,
    build_index,
    chat_body,
    drain,
    load,
    run_cli,
    scratch_dir,
    write_docs,
)

NAME = "tenants"
GOAL = ("2 tenants, colliding doc ids, randomized queries with each tenant's key during interleaved rebuilds: "
        "0 cross-tenant chunks, 0 cross-tenant user features, 0 documents lost, 0 failed requests")
TENANTS = ("acme", "globex")
# topic -> (file, fact template, question template); every tenant has every file: all ids collide
TOPICS = {
    "hotline": ("faq.md", "The {T} support hotline number is {code}.", "What is the {T} support hotline number?"),
    "price": ("pricing.md", "The {T} premium plan costs {code} credits a month.", "How much is the {T} premium plan?"),
    "office": ("office.md", "The {T} head office is in building {code}.", "Where is the {T} head office?"),
    "mascot": ("mascot.md", "The {T} mascot is called {code}.", "What is the {T} mascot called?"),
    "vault": ("security.md", "The {T} vault combination is {code}.", "What is the {T} vault combination?"),
}
DEFAULT_USERS = ["u001", "u002", "u003"]  # the sample users: they belong to the default tenant


def _doc(tenant: str, topic: str, revision: int) -> str:
    _, fact, _ = TOPICS[topic]
    code = f"{tenant[:2].upper()}-{topic[:3].upper()}-{revision}"
    return f"# {tenant.title()} {topic}\n\n{fact.format(T=tenant.title(), code=code)} This is {tenant} only.\n"


def _write_tenant(root: Path, tenant: str, topics: list[str], revisions: dict[str, int]) -> Path:
    folder = root / tenant / "docs"
    if folder.exists():
        for old in folder.glob("*.md"):
            old.unlink()
    return write_docs(folder, {TOPICS[t][0]: _doc(tenant, t, revisions.get(t, 0)) for t in topics})


def _chunk_owners(data_dir: Path) -> dict[str, str]:
    """chunk_id -> tenant, over every published version of the index (a response may name any of them)."""
    from llmfti.config import load_settings
    from llmfti.index import VectorIndex

    idx = VectorIndex.open(load_settings(data_dir=data_dir))
    owners: dict[str, str] = {}
    for version in idx.published_versions():
        rows = idx._at(version).search().select(["chunk_id", "tenant"]).limit(None).to_list()
        owners.update({r["chunk_id"]: r["tenant"] for r in rows})
    return owners


def _index_documents(data_dir: Path) -> dict[str, dict[str, str]]:
    """tenant -> {doc_id: text} of the newest published version."""
    from llmfti.config import load_settings
    from llmfti.index import VectorIndex

    idx = VectorIndex.open(load_settings(data_dir=data_dir))
    out: dict[str, dict[str, str]] = {}
    for row in idx._at(None).search().select(["tenant", "doc_id", "text"]).limit(None).to_list():
        out.setdefault(row["tenant"], {})[row["doc_id"]] = row["text"]
    return out


def _logged_features(data_dir: Path, request_ids: set[str]) -> dict[str, dict[str, Any]]:
    from llmfti.config import load_settings
    from llmfti.lance import connect

    drain(data_dir)
    table = connect(load_settings(data_dir=data_dir)).open_table("inference_log").to_arrow()
    rows = table.select(["request_id", "tenant", "user_features", "user_features_missing"]).to_pylist()
    return {r["request_id"]: r for r in rows if r["request_id"] in request_ids}


def _plan(i: int) -> tuple[str, str, str, str]:
    """Request ``i``: (key's tenant, tenant asked about, topic, user id); every 10th uses the default key."""
    rng = random.Random(20261130 * 1000 + i)
    key_tenant = "default" if i % 10 == 9 else TENANTS[i % 2]
    return key_tenant, rng.choice(TENANTS), rng.choice(list(TOPICS)), rng.choice(DEFAULT_USERS)


def run(full: bool = False) -> ScenarioResult:
    from llmfti.config import load_settings
    from pipelines.index_build import build_index as build_in_process

    per_tenant = 200 if full else 40
    rounds = 3 if full else 1  # rebuild rounds; each edits, adds and removes a document of both tenants
    clients = 8 if full else 4
    rng = random.Random(20261130)
    with scratch_dir(NAME) as root:
        data_dir, src = root / "data", root / "src"
        topics = {t: ["hotline", "price", "office", "mascot"] for t in TENANTS}
        revisions: dict[str, dict[str, int]] = {t: {} for t in TENANTS}
        folders = {t: _write_tenant(src, t, topics[t], revisions[t]) for t in TENANTS}
        settings = load_settings(data_dir=data_dir)  # the first builds in this process (one model load)
        builds = [build_in_process(settings, [folders[t]], tenant=t) for t in TENANTS]
        write_docs(src / "default", {"readme.md": "# Readme\n\nThe default tenant's handbook has no secrets.\n"})
        build_in_process(settings, [src / "default"])
        run_cli(data_dir, "features", "pipeline", "users")  # default-tenant users u001..u003, online

        plan: dict[int, tuple[str, str, str, str]] = {}
        outcomes: list[Any] = []
        rebuilds: list[dict[str, Any]] = []
        stop = threading.Event()
        with ServedAgent(data_dir) as agent:
            def body(i: int) -> dict[str, Any]:
                plan[i] = _plan(i)
                _, about, topic, user = plan[i]
                return chat_body(TOPICS[topic][2].format(T=about.title()), user=user)

            def enough() -> bool:
                return sum(1 for p in list(plan.values()) if p[0] != "default") >= 2 * per_tenant + clients

            loader = threading.Thread(target=lambda: outcomes.extend(load(
                agent.url, clients=clients, requests=100_000, duration_s=1800, key=lambda i: f"key-{_plan(i)[0]}",
                body=body, stop=stop)))
            loader.start()
            for r in range(1, rounds + 1):
                for tenant in TENANTS:  # edit one document, add one, remove one; then rebuild, as an operator
                    edited = rng.choice(topics[tenant])
                    revisions[tenant][edited] = r
                    missing = [t for t in TOPICS if t not in topics[tenant]]
                    topics[tenant].remove(rng.choice([t for t in topics[tenant] if t != edited]))
                    topics[tenant].append(rng.choice(missing))
                    _write_tenant(src, tenant, topics[tenant], revisions[tenant])
                    rebuilds.append({**build_index(data_dir, folders[tenant], tenant=tenant), "tenant": tenant,
                                     "during_load": loader.is_alive()})
            time.sleep(3.0)  # readers switch to the last build (within ~2 s) and keep querying it
            while not enough() and loader.is_alive():
                time.sleep(0.2)
            stop.set()
            loader.join()
            time.sleep(1.5)  # the server's log writer acknowledges before the drain reads the stream

        owners = _chunk_owners(data_dir)
        failed = [o for o in outcomes if not o.ok]
        cross_chunks, unknown_chunks, cited = [], [], 0
        for o in outcomes:
            if not o.ok:
                continue
            for citation in o.body.get("citations") or []:
                cited += 1
                owner = owners.get(citation["chunk_id"])
                if owner is None:
                    unknown_chunks.append(citation["chunk_id"])
                elif owner != plan[o.index][0]:  # the default key reads the default tenant
                    cross_chunks.append((plan[o.index][0], owner, citation["doc_id"]))
        logged = _logged_features(data_dir, {o.request_id for o in outcomes if o.ok and o.request_id})
        key_tenant_of = {o.request_id: plan[o.index][0] for o in outcomes if o.request_id}
        leaked_features = [rid for rid, row in logged.items()
                           if key_tenant_of[rid] != "default" and not row["user_features_missing"]]
        control = [row["user_features_missing"] for rid, row in logged.items() if key_tenant_of[rid] == "default"]

        documents = _index_documents(data_dir)
        lost, stale = [], []
        for tenant in TENANTS:
            expected = {f"docs/{TOPICS[t][0]}": _doc(tenant, t, revisions[tenant].get(t, 0)) for t in topics[tenant]}
            have = documents.get(tenant, {})
            lost += [f"{tenant}:{d}" for d in expected if d not in have]
            stale += [f"{tenant}:{d}" for d in have if d not in expected]
            stale += [f"{tenant}:{d}" for d, text in expected.items()
                      if d in have and text.split("\n\n", 1)[1].split(" This is")[0] not in have[d]]
        per_key = {t: sum(1 for o in outcomes if plan[o.index][0] == t) for t in (*TENANTS, "default")}
        measured = {
            "requests_per_tenant": per_key,
            "failed_requests": len(failed),
            "citations_checked": cited,
            "cross_tenant_chunks": len(cross_chunks),
            "unknown_chunks": len(unknown_chunks),
            "questions_about_the_other_tenant": sum(1 for o in outcomes if plan[o.index][0] in TENANTS
                                                    and plan[o.index][0] != plan[o.index][1]),
            "requests_logged": len(logged),
            "cross_tenant_user_features": len(leaked_features),
            "control_default_key_features_found": f"{control.count(False)}/{len(control)}",
            "rebuilds": len(rebuilds),
            "rebuilds_during_load": sum(1 for b in rebuilds if b["during_load"]),
            "rebuild_changes": [(b["tenant"], b["docs_added"], b["docs_updated"], b["docs_deleted"]) for b in rebuilds],
            "initial_builds_added": [b["docs_added"] for b in builds],
            "documents_lost": len(lost),
            "documents_stale": len(stale),
        }
        passed = (not failed and not cross_chunks and not unknown_chunks and not leaked_features and not lost
                  and not stale and len(logged) == len(outcomes) - len(failed) and cited > 0
                  and bool(control) and not any(control) and all(per_key[t] >= per_tenant for t in TENANTS)
                  and all(b["during_load"] for b in rebuilds))
        notes = "; ".join(filter(None, [
            f"failed: {[(o.status, (o.error or '')[:120]) for o in failed[:3]]}" if failed else "",
            f"cross-tenant: {cross_chunks[:3]}" if cross_chunks else "",
            f"lost: {lost[:5]}, stale: {stale[:5]}" if lost or stale else "",
            "user features: every request names a default-tenant user (u001..u003); acme/globex keys must get "
            "none of their features",
        ]))
        return ScenarioResult(NAME, GOAL, measured, passed, notes)
