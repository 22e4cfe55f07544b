"""Index builds under faults: colliding doc ids across tenants, corrupt inputs of every format,
mistyped paths, and readers during a build. Each test injects the fault for real."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmfti.errors import NotFoundError
from llmfti.index import VectorIndex, history
from llmfti.lance import connect, table_names
from pipelines.index_build import build_index
from tests.documents import minimal_pdf

ACME_FAQ = "# FAQ\n\nAcme refunds are paid within 14 days to the original card. Ask for form R-7."
GLOBEX_FAQ = "# FAQ\n\nGlobex ships hovercraft parts from Cypress Creek by overnight freight."


def _tenant_folders(tmp_path: Path) -> tuple[Path, Path]:
    acme, globex = tmp_path / "acme" / "docs", tmp_path / "globex" / "docs"
    for folder, faq in ((acme, ACME_FAQ), (globex, GLOBEX_FAQ)):
        folder.mkdir(parents=True)
        (folder / "faq.md").write_text(faq)
    (acme / "only-acme.md").write_text("# Anvils\n\nAcme anvils weigh one hundred pounds and ship by rail.")
    return acme, globex


def _doc_ids(idx: VectorIndex, query: str, tenant: str) -> set[str]:
    return {h.doc_id for h in idx.search(query, k=10, mode="fts", tenant=tenant).hits}


def test_colliding_doc_ids_of_two_tenants_never_touch_each_other(settings, tmp_path: Path) -> None:
    acme, globex = _tenant_folders(tmp_path)
    first = build_index(settings, [acme], tenant="acme")
    second = build_index(settings, [globex], tenant="globex")
    assert (first["docs_added"], second["docs_added"], second["docs_updated"], second["docs_deleted"]) == (2, 1, 0, 0)

    idx = VectorIndex.open(settings)
    rows = idx._table.to_arrow().select(["tenant", "doc_id", "chunk_id", "text"]).to_pylist()
    faq = {r["tenant"]: r for r in rows if r["doc_id"] == "docs/faq.md"}
    assert set(faq) == {"acme", "globex"} and faq["acme"]["chunk_id"] != faq["globex"]["chunk_id"]
    assert "refunds" in faq["acme"]["text"] and "hovercraft" in faq["globex"]["text"]
    assert _doc_ids(idx, "refunds", "acme") == {"docs/faq.md"}
    assert _doc_ids(idx, "refunds", "globex") == set()  # acme's faq never leaks into globex's results
    assert _doc_ids(idx, "hovercraft", "acme") == set()

    # globex deletes its faq: acme's document with the same id stays
    (globex / "faq.md").unlink()
    (globex / "other.md").write_text("# Other\n\nGlobex has an office in Cypress Creek.")
    third = build_index(settings, [globex], tenant="globex")
    assert (third["docs_added"], third["docs_deleted"]) == (1, 1)
    idx = VectorIndex.open(settings)
    assert _doc_ids(idx, "refunds", "acme") == {"docs/faq.md"}
    assert _doc_ids(idx, "hovercraft", "globex") == set()


def test_the_same_folder_built_for_two_tenants_keeps_both_copies(settings, tmp_path: Path) -> None:
    acme, _ = _tenant_folders(tmp_path)
    build_index(settings, [acme], tenant="acme")
    again = build_index(settings, [acme], tenant="globex")  # a shared folder, indexed for a second tenant
    assert (again["docs_added"], again["docs_deleted"]) == (2, 0)
    (acme / "only-acme.md").unlink()
    pruned = build_index(settings, [acme], tenant="globex")  # globex's build prunes only globex's rows
    assert pruned["docs_deleted"] == 1
    idx = VectorIndex.open(settings)
    assert _doc_ids(idx, "anvils", "acme") == {"docs/only-acme.md"}
    assert _doc_ids(idx, "anvils", "globex") == set()


def test_a_build_for_one_tenant_rejects_documents_naming_another(settings, tmp_path: Path) -> None:
    src = tmp_path / "kb.jsonl"
    src.write_text(json.dumps({"id": "a", "text": "Acme anvils are heavy."}) + "\n"
                   + json.dumps({"id": "b", "text": "Initech staplers are red.", "tenant": "initech"}) + "\n")
    summary = build_index(settings, [src], tenant="acme")
    assert (summary["docs_added"], summary["quarantined"]) == (1, 1)
    (bad,) = history.quarantined(connect(settings), "docs")
    assert "names tenant 'initech'" in bad["reason"] and "--tenant initech" in bad["reason"]
    idx = VectorIndex.open(settings)
    assert _doc_ids(idx, "staplers", "initech") == set()
    # without --tenant each document's own tenant is used
    assert build_index(settings, [src])["docs_added"] == 2


def _squad(titles: list[str]) -> str:
    return json.dumps({"version": "1.1", "data": [
        {"title": t, "paragraphs": [{"context": f"The {t} paragraph talks about {t.lower()} facts.", "qas": []}]}
        for t in titles]})


# format -> (file name, good content, corrupt content, a word of each good document)
CORRUPTIONS = {
    "md": ("note.md", "# Bees\n\nHoney bees dance to show where flowers are.",
           b"# Bees\n\nHoney bees \xff\xfe dance", ["dance"]),
    "txt": ("note.txt", "Volcanoes erupt when magma rises.", b"Volcanoes \x00\x01\x02 erupt", ["magma"]),
    "html": ("page.html", "<html><body><p>The knight moves in an L shape.</p></body></html>",
             b"<html><body><p>The knight \xc3\x28 moves", ["knight"]),
    "pdf": ("tides.pdf", minimal_pdf("Tides follow the Moon."), minimal_pdf("Tides follow the Moon.")[:150],
            ["tides"]),
    "jsonl": ("kb.jsonl", "".join(json.dumps({"id": f"kb-{i}", "text": f"Fact {w} number {i}."}) + "\n"
                                  for i, w in enumerate(["zebra", "walrus", "okapi"])),
              None, ["zebra", "walrus", "okapi"]),
    "squad": ("dev.json", _squad(["Lighthouses", "Glaciers"]), _squad(["Lighthouses", "Glaciers"])[:-20].encode(),
              ["lighthouses", "glaciers"]),
}


@pytest.mark.parametrize("fmt", sorted(CORRUPTIONS))
def test_a_corrupt_file_of_every_format_keeps_its_documents(settings, tmp_path: Path, fmt: str) -> None:
    name, good, corrupt, words = CORRUPTIONS[fmt]
    folder = tmp_path / "src"
    folder.mkdir()
    path = folder / name
    path.write_bytes(good if isinstance(good, bytes) else good.encode())
    first = build_index(settings, [folder])
    assert first["docs_added"] == len(words) and first["quarantined"] == 0
    if corrupt is None:  # JSONL: the exact fault, one line of bad bytes appended
        path.write_bytes(path.read_bytes() + b"\xff\xfe broken\n")
    else:
        path.write_bytes(corrupt)

    again = build_index(settings, [folder])
    assert (again["docs_deleted"], again["docs_added"], again["quarantined"]) == (0, 0, 1), again
    idx = VectorIndex.open(settings)
    for word in words:
        assert idx.search(word, k=1, mode="fts").hits, (fmt, word)  # the last good version is still served
    (bad,) = history.quarantined(connect(settings), "docs")
    assert bad["path"].endswith(name) and "fix" in bad["reason"]
    if fmt == "jsonl":
        assert "line 4" in bad["reason"] and "not valid UTF-8" in bad["reason"]


def test_one_bad_jsonl_line_loses_only_that_line(settings, tmp_path: Path) -> None:
    src = tmp_path / "kb.jsonl"
    lines = [json.dumps({"id": f"kb-{i}", "text": f"Fact {w} number {i}."}) for i, w in
             enumerate(["zebra", "walrus", "okapi"])]
    src.write_text("\n".join(lines) + "\n")
    build_index(settings, [src])
    # line 2 is damaged: its document is kept (its id cannot be read), the others load as usual
    src.write_text("\n".join([lines[0], '{"id": "kb-1", "text": "Fact wal', lines[2].replace("okapi", "tapir")]))
    damaged = build_index(settings, [src])
    assert (damaged["docs_deleted"], damaged["docs_updated"], damaged["quarantined"]) == (0, 1, 1)
    (bad,) = history.quarantined(connect(settings), "docs")
    assert "line 2" in bad["reason"] and "invalid JSON" in bad["reason"]
    idx = VectorIndex.open(settings)
    assert idx.search("walrus", k=1, mode="fts").hits[0].doc_id == "kb-1"
    assert idx.search("tapir", k=1, mode="fts").hits[0].doc_id == "kb-2"
    # a clean load that no longer holds kb-1 deletes it; a file that is gone deletes its documents
    src.write_text("\n".join([lines[0], lines[2]]))
    assert build_index(settings, [src.parent])["docs_deleted"] == 0  # another path: kb.jsonl's rows untouched
    assert build_index(settings, [src])["docs_deleted"] == 1
    src.unlink()
    other = src.parent / "other.md"
    other.write_text("# Other\n\nSomething else entirely.")
    assert build_index(settings, [src.parent])["docs_deleted"] == 0  # kb.jsonl rows came from path kb.jsonl


def test_a_missing_path_is_an_error_before_anything_is_written(settings, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="no such file or folder") as error:
        build_index(settings, [tmp_path / "no" / "such" / "path"])
    assert "fix: check the path" in str(error.value)
    assert not [t for t in table_names(connect(settings)) if t.startswith("docs__")]  # no new empty index

    good = tmp_path / "good"
    good.mkdir()
    (good / "a.md").write_text("# A\n\nAardvarks dig burrows.")
    version = build_index(settings, [good])["version"]
    with pytest.raises(NotFoundError):
        build_index(settings, [good, tmp_path / "typo"])  # one good path and one typo: nothing is synced
    idx = VectorIndex.open(settings)
    assert idx.version == version and [v["version"] for v in idx.versions()] == [version]


def test_readers_see_only_published_versions(settings, tmp_path: Path) -> None:
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "a.md").write_text("# A\n\nAardvarks dig burrows at night.")
    built = build_index(settings, [folder])
    idx = VectorIndex.open(settings)
    assert built["version"] > 1  # several commits: rows, then the search indices
    unpublished = built["version"] - 1
    with pytest.raises(NotFoundError, match=f"one of the versions {built['version']} "):
        idx.search("aardvarks", version=unpublished)

    # a build that has committed its rows but not finished: readers keep the published version
    (folder / "b.md").write_text("# B\n\nBadgers dig setts in woodland.")
    writer = VectorIndex.open(settings)
    from pipelines.index_build import LocalEngine, _rows

    doc = LocalEngine().load(settings, [folder / "b.md"], "default")[0][0]
    info, chunked, vectors = LocalEngine().chunk_and_embed(settings, writer, [doc], set(), lambda *a: None)
    writer.apply(_rows([doc], chunked, vectors, {doc.identity: "h"}, info.dimension, "default"), [])
    reader = VectorIndex.open(settings)
    assert reader.head_version > built["version"] and reader.version == built["version"]
    result = reader.search("badgers woodland", k=5, mode="fts")
    assert result.version == built["version"] and result.hits == []
    writer.record_build("build", {"docs_added": 1})  # published: readers switch to it
    assert VectorIndex.open(settings).search("badgers woodland", k=5, mode="fts").hits


def test_embedding_progress_moves_per_batch(tmp_path: Path, data_dir: Path) -> None:
    from llmfti.config import load_settings

    settings = load_settings(data_dir=data_dir, embedder={"batch_size": 4})
    src = tmp_path / "kb.jsonl"
    src.write_text("".join(json.dumps({"id": f"d{i}", "text": f"Short fact number {i}."}) + "\n" for i in range(10)))
    events: list[tuple[str, int, int]] = []
    build_index(settings, [src], on_progress=lambda stage, done, total: events.append((stage, done, total)))
    assert [(done, total) for stage, done, total in events if stage == "embed"] == [(0, 10), (4, 10), (8, 10),
                                                                                     (10, 10)]


def test_an_index_of_chunk_schema_v1_asks_for_a_rebuild(settings) -> None:
    import pyarrow as pa

    connect(settings).create_table("docs__chunks_v1", schema=pa.schema([("chunk_id", pa.string())]))
    with pytest.raises(NotFoundError, match="chunk schema v1") as error:
        VectorIndex.open(settings)
    assert "llmfti index build PATH --index docs" in str(error.value) and "docs__chunks_v1" in str(error.value)
