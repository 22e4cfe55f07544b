"""Index rebuilds (add, change, delete) while a real ``llmfti serve`` answers queries.

A corpus of small documents (one fact each) is indexed; clients query ``llmfti serve`` without
pause while the folder changes between rebuilds by the real ``llmfti index build``: each round
adds a document, rewrites one and deletes one. Afterwards every answered response is checked
against the index version it names, opened the way a user would (``--version N``): that version
must be one a user can name (a published build, not a half-done one) and must hold every chunk
the response cites, with the same document id and text.

Measured: requests and failures (goal 0), citations checked and missing from their version (goal
**0**), responses naming a version that cannot be opened (goal 0), versions seen by clients
(more than one: the rebuilds happened under load), and whether the newest build is served at
the end.
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.chaos.harness import ScenarioResult, ServedAgent, build_index, chat_body, load, scratch_dir

NAME = "rebuild_while_serving"
GOAL = ("index rebuilds (add/change/delete) while serving: 0 errors; every response's citations exist in the "
        "index version it names")
WORDS = ["amber", "basalt", "cobalt", "dune", "ember", "fjord", "granite", "harbor", "iris", "juniper", "kelp",
         "lagoon", "meadow", "nebula", "onyx", "prairie", "quartz", "reef", "sierra", "tundra"]


def _text(word: str, revision: int) -> str:
    return (f"# The {word} station\n\nThe {word} station records {10 + revision} readings per hour. "
            f"Revision {revision} of the {word} notes says the {word} sensors were calibrated in week {revision}.\n")


def _check_citations(data_dir: Path, outcomes: list[Any]) -> dict[str, Any]:
    """Open each named version as a user would and look up every cited chunk there."""
    from llmfti.config import load_settings
    from llmfti.index import VectorIndex
    from llmfti.lance import connect

    settings = load_settings(data_dir=data_dir)
    idx = VectorIndex.open(settings)
    chunks_at: dict[int, dict[str, tuple[str, str]] | None] = {}
    missing, unopenable, checked, versions = [], [], 0, set()
    for o in outcomes:
        if not o.ok:
            continue
        version = o.body.get("index_version")
        versions.add(version)
        if version not in chunks_at:
            try:
                number = idx.resolve_version(int(version))  # what `--version N` accepts: published versions
                table = connect(settings).open_table(f"{idx.name}__chunks_v2", version=number)
                rows = table.search().select(["chunk_id", "doc_id", "text"]).limit(None).to_list()
                chunks_at[version] = {r["chunk_id"]: (r["doc_id"], r["text"]) for r in rows}
            except Exception as exc:  # noqa: BLE001 - any failure to open the named version is what we count
                chunks_at[version] = None
                unopenable.append((version, f"{type(exc).__name__}: {exc}"[:200]))
        chunks = chunks_at[version]
        for citation in o.body.get("citations") or []:
            checked += 1
            found = None if chunks is None else chunks.get(citation["chunk_id"])
            if found is None or found[0] != citation["doc_id"] or not found[1].startswith(citation["snippet"]):
                missing.append((version, citation["doc_id"], citation["chunk_id"]))
    return {"checked": checked, "missing": missing, "unopenable": unopenable, "versions": versions,
            "published": idx.published_versions(), "latest": idx.version}


def run(full: bool = False) -> ScenarioResult:
    rounds = 4 if full else 2
    clients = 8 if full else 4
    rng = random.Random(7)
    with scratch_dir("rebuild") as root:
        data_dir, folder = root / "data", root / "docs"
        folder.mkdir(parents=True)
        live = {w: 0 for w in WORDS[:8]}
        for word, revision in live.items():
            (folder / f"{word}.md").write_text(_text(word, revision))
        first = build_index(data_dir, folder)
        spare = [w for w in WORDS if w not in live]
        stop = threading.Event()
        outcomes: list[Any] = []
        rebuilds: list[dict[str, Any]] = []
        with ServedAgent(data_dir) as agent:
            def body(i: int) -> dict[str, Any]:
                word = WORDS[i % len(WORDS)]  # also asks about deleted and not-yet-added documents
                return chat_body(f"How many readings per hour does the {word} station record? (#{i})")

            loader = threading.Thread(target=lambda: outcomes.extend(load(
                agent.url, clients=clients, duration_s=900, requests=100_000, body=body, stop=stop)))
            loader.start()
            try:
                time.sleep(2.0)
                for r in range(1, rounds + 1):
                    added = spare.pop(0)
                    changed = rng.choice(sorted(live))
                    deleted = rng.choice(sorted(w for w in live if w != changed))
                    live[added] = r
                    live[changed] = r
                    del live[deleted]
                    (folder / f"{added}.md").write_text(_text(added, r))
                    (folder / f"{changed}.md").write_text(_text(changed, r))
                    (folder / f"{deleted}.md").unlink()
                    rebuilds.append(build_index(data_dir, folder))
                time.sleep(3.0)  # readers pick up the last build (within ~2 s), then a few more answers
            finally:
                stop.set()
                loader.join()
        check = _check_citations(data_dir, outcomes)
        failed = [o for o in outcomes if not o.ok]
        last = rebuilds[-1]["version"] if rebuilds else first["version"]
        final_answers = [o for o in outcomes if o.ok and o.t_start > max(o2.t_start for o2 in outcomes) - 1.0]
        measured = {
            "requests": len(outcomes),
            "failed_requests": len(failed),
            "rebuilds": len(rebuilds),
            "rebuild_changes": [(b["docs_added"], b["docs_updated"], b["docs_deleted"]) for b in rebuilds],
            "index_versions_served": sorted(v for v in check["versions"] if v is not None),
            "published_versions": check["published"],
            "citations_checked": check["checked"],
            "citations_missing_from_named_version": len(check["missing"]),
            "responses_naming_unopenable_version": len(check["unopenable"]),
            "newest_build_served_at_end": bool(final_answers) and all(
                o.body.get("index_version") == last for o in final_answers),
        }
        passed = (not failed and check["checked"] > 0 and not check["missing"] and not check["unopenable"]
                  and len(measured["index_versions_served"]) >= 2 and measured["newest_build_served_at_end"]
                  and all(b["docs_added"] == b["docs_updated"] == b["docs_deleted"] == 1 for b in rebuilds))
        notes = "; ".join(filter(None, [
            f"failed: {[(o.status, (o.error or '')[:120]) for o in failed[:3]]}" if failed else "",
            f"missing: {check['missing'][:3]}" if check["missing"] else "",
            f"unopenable: {check['unopenable'][:3]}" if check["unopenable"] else "",
        ]))
        return ScenarioResult(NAME, GOAL, measured, passed, notes)
