"""Every table and every registry artifact on ``s3://``, against a real S3 API server (moto) on loopback.

The server is ``moto_server`` (``pip install "moto[server]"``, in the dev extra) started by the fixture;
the bucket is created with a plain HTTP PUT. Credentials live only in the environment; the tests assert
they appear in no object written to the bucket and no file written under data_dir.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from llmfti.config import load_settings
from llmfti.errors import ConfigError

KEY_ID = "AKIALLMFTITEST0KEYID"
SECRET = "llmfti-test-secret-9c1f3e7a"
BUCKET = "llmfti-test"
REPO = Path(__file__).resolve().parents[1]


# -- settings (no server needed) ----------------------------------------------------------------

def test_an_s3_uri_stays_a_uri_and_tables_go_under_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMFTI_STORAGE__URI", "s3://bucket/some/prefix/")
    monkeypatch.setenv("LLMFTI_STORAGE__OPTIONS__ENDPOINT", "http://127.0.0.1:9000")
    settings = load_settings(data_dir=tmp_path)
    assert settings.storage.uri == "s3://bucket/some/prefix"
    assert settings.lancedb_uri == "s3://bucket/some/prefix/lancedb"  # was collapsed to s3:/bucket/...
    assert settings.storage.options == {"endpoint": "http://127.0.0.1:9000"}
    for uri in ("gs://b/p", "az://container/p"):
        assert load_settings(data_dir=tmp_path, storage={"uri": uri}).lancedb_uri == uri + "/lancedb"
    monkeypatch.delenv("LLMFTI_STORAGE__URI")
    monkeypatch.delenv("LLMFTI_STORAGE__OPTIONS__ENDPOINT")
    local = load_settings(data_dir=tmp_path)
    assert local.storage.uri is None and local.lancedb_uri == str(tmp_path / "lancedb")
    assert load_settings(data_dir=tmp_path, storage={"uri": str(tmp_path / "x")}).lancedb_uri == str(
        tmp_path / "x" / "lancedb")


@pytest.mark.parametrize("uri, message", [
    ("s3:/bucket/prefix", "not a well-formed s3:// URI"),
    ("s3://", "not a well-formed"),
    ("http://example.com/x", "scheme 'http'"),
    ("", "empty"),
])
def test_a_malformed_storage_uri_is_refused_with_the_fix(tmp_path: Path, uri: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        load_settings(data_dir=tmp_path, storage={"uri": uri})
    assert "fix:" in str(err.value)


@pytest.mark.parametrize("key", ["aws_secret_access_key", "aws_access_key_id", "aws_session_token",
                                 "google_service_account_key", "azure_storage_account_key", "sas_token"])
def test_credentials_in_storage_options_are_refused(tmp_path: Path, key: str) -> None:
    with pytest.raises(ConfigError, match="credential") as err:
        load_settings(data_dir=tmp_path, storage={"uri": "s3://b/p", "options": {key: "x"}})
    assert "environment" in str(err.value)


def test_no_module_opens_lancedb_except_through_llmfti_lance() -> None:
    """One function opens the database for a settings object; anything else would miss storage.uri."""
    offenders = []
    for folder in ("llmfti", "pipelines", "agents", "evals", "benchmarks"):
        for path in (REPO / folder).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            if path != REPO / "llmfti" / "lance.py" and ("lancedb.connect(" in text or "lance.dataset(" in text):
                offenders.append(str(path.relative_to(REPO)))
    assert offenders == []


# -- a real S3 API on loopback ------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def s3_endpoint():
    """A moto S3 server on loopback with one bucket; stopped (and its process reaped) afterwards."""
    exe = Path(sys.executable).with_name("moto_server")
    if not exe.exists():
        pytest.fail("moto_server is missing: pip install 'moto[server]' (it is in the dev extra)")
    port = _free_port()
    proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(urllib.request.Request(f"{url}/{BUCKET}", method="PUT"), timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server did not answer on {url}") from None
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def s3_settings(s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Settings whose storage is a fresh prefix of the bucket; credentials only in the environment."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("LLMFTI_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("LLMFTI_STORAGE__URI", f"s3://{BUCKET}/{uuid.uuid4().hex[:8]}")
    monkeypatch.setenv("LLMFTI_STORAGE__OPTIONS",
                       f'{{"endpoint": "{s3_endpoint}", "allow_http": "true", "region": "us-east-1"}}')
    return load_settings()


def _objects(endpoint: str, prefix: str) -> dict[str, bytes]:
    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    out: dict[str, bytes] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        for item in page.get("Contents", []):
            out[item["Key"]] = s3.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read()
    return out


def _assert_no_credentials(endpoint: str, settings, *local_roots: Path) -> None:
    prefix = settings.storage.uri.split("/", 3)[3]
    stored = _objects(endpoint, prefix)
    assert stored, "nothing was written to the bucket"
    leaks = [key for key, body in stored.items() if KEY_ID.encode() in body or SECRET.encode() in body]
    for root in local_roots:
        leaks += [str(p) for p in root.rglob("*") if p.is_file() and not p.is_symlink()
                  and (KEY_ID.encode() in p.read_bytes() or SECRET.encode() in p.read_bytes())]
    assert leaks == []


def test_s3_smoke_tables_and_artifacts(s3_settings, s3_endpoint: str, tmp_path: Path) -> None:
    """Fast: a table and an artifact folder round-trip through the S3 API, nothing under data_dir/lancedb."""
    import pyarrow as pa

    from llmfti.lance import connect, insert_if_absent, table_names
    from llmfti.storage import ArtifactStore

    db = connect(s3_settings)
    table = db.create_table("smoke", schema=pa.schema([pa.field("k", pa.int64(), nullable=False,
                                                                metadata={"lance-schema:unenforced-primary-key": "1"}),
                                                       ("v", pa.string())]))
    assert insert_if_absent(table, ["k"], {"k": 1, "v": "first"}, table.schema)
    assert not insert_if_absent(table, ["k"], {"k": 1, "v": "second"}, table.schema)
    assert "smoke" in table_names(db) and table.to_arrow().to_pylist() == [{"k": 1, "v": "first"}]
    assert not (Path(s3_settings.data_dir) / "lancedb").exists()

    folder = tmp_path / "art"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "w.bin").write_bytes(bytes(range(256)) * 10)
    store = ArtifactStore(s3_settings)
    location = store.location("registry", "m", "r1")
    store.put(folder, location)
    copy = store.download(location, tmp_path / "copy")
    assert (copy / "sub" / "w.bin").read_bytes() == bytes(range(256)) * 10
    keys = _objects(s3_endpoint, s3_settings.storage.uri.split("/", 3)[3])
    assert any(k.endswith("/registry/m/r1/.llmfti-manifest.json") for k in keys)
    assert any("/lancedb/smoke.lance/" in k for k in keys)
    _assert_no_credentials(s3_endpoint, s3_settings, Path(s3_settings.data_dir))


def _docs(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "lighthouse.md").write_text("# Lighthouses\n\nThe Fresnel lens lets a lighthouse beam reach sailors "
                                          "thirty kilometres away across the dark sea.\n")
    (folder / "glacier.md").write_text("# Glaciers\n\nA glacier moves downhill under its own weight, carving "
                                       "valleys shaped like the letter U.\n")
    return folder


def _tiny_adapter(root: Path):
    """(adapter folder, base model folder, pinned tokenizer): real, untrained, built in ``root``."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from llmfti.llm.tokenization import load_tokenizer
    from tests.tiny_llm import build_llama, build_tokenizer

    torch.set_num_threads(1)
    tokenizer = load_tokenizer(build_tokenizer(root / "tok"))
    base = build_llama(root / "base", vocab_size=len(tokenizer.tokenizer))
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(str(base)),
                           LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM"))
    model.save_pretrained(str(root / "adapter"))
    return root / "adapter", base, tokenizer


@pytest.mark.slow
def test_s3_round_trip_index_features_registry(s3_settings, s3_endpoint: str, tmp_path: Path) -> None:
    """index build -> incremental rebuild -> search (dense, fts, hybrid) -> time travel -> tag -> rollback;
    feature group write -> materialize; register -> promote -> load back on another machine (data_dir)."""
    from llmfti.features.embedded_redis import shutdown_embedded
    from llmfti.features.feature_group import FeatureGroup
    from llmfti.features.materialization import materialize
    from llmfti.features.online_store import OnlineStore
    from llmfti.features.spec import Feature, FeatureGroupSpec
    from llmfti.index import VectorIndex, history
    from llmfti.lance import connect, table_names
    from llmfti.registry import ModelRegistry
    from llmfti.registry.loading import load_model_version
    from pipelines.index_build import build_index

    settings = s3_settings
    # -- the document index ------------------------------------------------------------------------
    docs = _docs(tmp_path / "docs")
    (docs / "broken.pdf").write_bytes(b"%PDF-1.7 this is not a pdf")
    first = build_index(settings, [docs])
    assert (first["docs_added"], first["quarantined"]) == (2, 1), first
    (docs / "glacier.md").write_text("# Glaciers\n\nA glacier is a river of ice; its moraine marks how far it "
                                     "once reached.\n")
    (docs / "volcano.md").write_text("# Volcanoes\n\nMagma that reaches the surface is called lava.\n")
    second = build_index(settings, [docs])
    assert (second["docs_added"], second["docs_updated"], second["docs_unchanged"]) == (1, 1, 1), second
    assert second["chunks_embedded"] >= 2 and second["version"] > first["version"]
    idx = VectorIndex.open(settings)
    for mode in ("dense", "fts", "hybrid"):
        hits = idx.search("What is lava?", k=1, mode=mode).hits
        assert hits and "lava" in hits[0].text, mode
    assert "moraine" in idx.search("moraine", k=1, mode="fts").hits[0].text
    # time travel: the first build still answers with the old text; tag it, roll back to it
    old = idx.search("glacier valleys", k=1, mode="fts", version=first["version"]).hits
    assert old and "letter U" in old[0].text
    assert idx.tag("release-1", first["version"]) == first["version"]
    assert VectorIndex.open(settings).tags() == {"release-1": first["version"]}
    idx.rollback("release-1")
    after = VectorIndex.open(settings)
    assert after.count_rows() == after.count_rows(first["version"])
    assert not after.search("lava", k=5, mode="fts").hits  # the volcano came later
    rejected = history.quarantined(connect(settings), "docs")  # once per build that met it
    assert rejected and all(r["path"].endswith("broken.pdf") for r in rejected)

    # -- a feature group, materialized to the (embedded) online store ---------------------------
    spec = FeatureGroupSpec(name="users", features=[Feature(name="plan", type="string", description="plan",
                                                            default="free")])
    now = datetime.now(UTC).replace(microsecond=0)
    group = FeatureGroup.create(settings, spec)
    group.write([{"user_id": "u1", "event_time": now - timedelta(days=1), "plan": "pro"},
                 {"user_id": "u2", "event_time": now, "plan": "team"}])
    store = OnlineStore.from_settings(settings)
    try:
        result = materialize(settings, "users", store=store)
        assert result.keys_written == 2 and store.get("users", "u2").values == {"plan": "team"}
    finally:
        shutdown_embedded(settings, save=False)

    # -- the registry: artifacts on S3, loaded back by a process with an empty data_dir -----------
    adapter, base, tokenizer = _tiny_adapter(tmp_path / "model")
    registry = ModelRegistry(settings)
    mv = registry.register(adapter_dir=adapter, tokenizer=tokenizer, base_model=str(base),
                           training_dataset_id="qa@v1", index_name="docs", index_version=second["version"])
    assert mv.artifact_uri.startswith(settings.storage.uri + "/registry/assistant/")
    registry.record_eval(mv.version, "run-1", passed=True, suite="docs")
    registry.promote(mv.version, "production")
    # two more registrations racing on S3 (conditional PUT commits): distinct numbers, no lock
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:
        raced = sorted(pool.map(lambda _: ModelRegistry(settings).register(
            adapter_dir=adapter, tokenizer=tokenizer, base_model=str(base), training_dataset_id="qa@v1").version,
            range(2)))
    assert raced == [mv.version + 1, mv.version + 2]
    tables = set(table_names(connect(settings)))
    assert {"registry_model_versions", "registry_alias_events", "registry_eval_runs"} <= tables
    assert not (Path(settings.data_dir) / "lancedb").exists()  # nothing fell back to a local folder

    elsewhere = settings.model_copy(update={"data_dir": tmp_path / "other-machine"})
    other = ModelRegistry(elsewhere)
    served = other.fetch(other.resolve("production"))
    assert served.version == mv.version and served.artifact_dir.is_relative_to(tmp_path / "other-machine")
    assert "production" in (served.artifact_dir / "model_card.md").read_text()
    model, pinned = load_model_version(served)
    assert pinned.fingerprint == tokenizer.fingerprint and model.peft_config
    shutil.rmtree(served.artifact_dir / "adapter")  # a damaged cache is downloaded again
    assert (other.fetch(served).adapter_dir / "adapter_config.json").is_file()

    _assert_no_credentials(s3_endpoint, settings, Path(settings.data_dir), tmp_path / "other-machine")
    cards = [r["model_card"] for r in connect(settings).open_table("registry_model_versions").to_arrow().to_pylist()]
    assert cards and not any(KEY_ID in c or SECRET in c for c in cards)


@pytest.mark.slow
def test_s3_a_served_agent_answers_from_the_bucket_and_its_log_drains_there(s3_settings, s3_endpoint: str,
                                                                               tmp_path: Path) -> None:
    """A real ``llmfti serve`` and ``llmfti index build`` / ``logs drain`` subprocesses, configured only by
    LLMFTI_STORAGE__* in their environment: the index they search and the inference log they drain are
    tables in the bucket, nothing under data_dir/lancedb."""
    from benchmarks.chaos.harness import ServedAgent, build_index, load, logged_request_ids, stop_embedded_redis

    data_dir = Path(s3_settings.data_dir)
    summary = build_index(data_dir, _docs(tmp_path / "docs"))
    assert summary["docs_added"] == 2
    try:
        with ServedAgent(data_dir, args=["--no-samples"]) as agent:
            outcomes = load(agent.url, clients=2, requests=6,
                            body=lambda i: {"model": "llmfti-extractive",
                                            "messages": [{"role": "user", "content": f"Why do glaciers move? {i}"}]})
        answered = {o.request_id for o in outcomes if o.status == 200}
        assert len(answered) == 6 and all("glacier" in str(o.body).lower() for o in outcomes)
        assert answered <= logged_request_ids(data_dir)  # drained into the inference_log table on S3
    finally:
        stop_embedded_redis(data_dir)
    keys = _objects(s3_endpoint, s3_settings.storage.uri.split("/", 3)[3])
    assert any("/lancedb/inference_log.lance/" in k for k in keys)
    assert not (data_dir / "lancedb").exists()
    assert list(tmp_path.glob("serve-*.log"))  # the server's log is scanned too
    _assert_no_credentials(s3_endpoint, s3_settings, tmp_path)
