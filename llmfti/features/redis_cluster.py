"""Redis Cluster as llmfti's Redis (setting ``redis.cluster``): the client, and which nodes are up.

``redis.url`` names any node (``redis://host:port``); the client discovers the others. A comma
separated list (``redis://a:7000,b:7001`` or ``redis://a:7000,redis://b:7001``) gives more nodes to
discover from, so a process can start while the first one is down. Credentials and TLS come from
the first URL and apply to every node.

Why nothing here needs hash tags: every llmfti operation touches one key (an entity's feature
hash, a group's meta hash holding definition and watermark together, a rate-limit log run by one
Lua script, a log stream). Pipelines are non-transactional everywhere (``transaction=False``), and
redis-py's cluster pipeline splits them per node, which is all they rely on. Entity keys are
deliberately *not* tagged: tagging them would put a whole feature group on one node.

What a dead master means (no replica to fail over to; see the server's
``cluster-require-full-coverage``): keys whose slot it served fail with a connection error, which
llmfti maps to :class:`~llmfti.errors.StoreUnavailableError` exactly as for a dead single Redis,
while keys on the other masters keep working. With ``cluster-require-full-coverage yes`` (Redis'
default) the surviving masters refuse *every* key once they mark the node failed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from llmfti.errors import ConfigError, StoreUnavailableError

if TYPE_CHECKING:
    from redis.cluster import RedisCluster

SLOTS = 16384


def node_urls(url: str) -> list[str]:
    """The node URLs of a (comma separated) ``redis.url``; bare ``host:port`` items get the first's scheme."""
    items = [item.strip() for item in url.split(",") if item.strip()]
    if not items:
        raise ConfigError("redis.url is empty", expected="redis://HOST:PORT[,HOST:PORT...]",
                          fix="set redis.url (LLMFTI_REDIS__URL) to one or more cluster nodes")
    scheme = urlsplit(items[0]).scheme or "redis"
    urls = [item if "://" in item else f"{scheme}://{item}" for item in items]
    for item in urls:
        parts = urlsplit(item)
        try:
            parts.port  # noqa: B018 - raises ValueError on a malformed port
        except ValueError as exc:
            raise ConfigError(f"redis.url item {item!r} has no valid port: {exc}",
                              expected="redis://HOST:PORT", fix="fix redis.url (LLMFTI_REDIS__URL)") from exc
        if parts.scheme not in ("redis", "rediss") or not parts.hostname:
            raise ConfigError(f"redis.url item {item!r} is not a TCP Redis URL",
                              expected="redis://HOST:PORT or rediss://HOST:PORT (a cluster has no unix sockets)",
                              fix="fix redis.url (LLMFTI_REDIS__URL)")
    return urls


def cluster_client(url: str, *, timeout_s: float, decode_responses: bool = False,
                   client_name: str | None = None) -> RedisCluster:
    """A RedisCluster on the nodes of ``url``, failing fast like llmfti's single-node client.

    One retry without backoff (redis-py's default is 10 with exponential backoff, seconds per call
    when a node hangs), and no full-coverage requirement on the client side, so it starts and
    serves the covered slots while a master is missing.
    """
    from redis.backoff import NoBackoff
    from redis.cluster import ClusterNode, RedisCluster
    from redis.exceptions import RedisClusterException, RedisError
    from redis.retry import Retry

    first, *others = node_urls(url)
    extra = [ClusterNode(urlsplit(u).hostname, urlsplit(u).port or 6379) for u in others]
    options: dict[str, Any] = dict(socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
                                   decode_responses=decode_responses)
    if client_name:
        options["client_name"] = client_name
    try:
        return RedisCluster(url=first, startup_nodes=extra, retry=Retry(NoBackoff(), 1),
                            require_full_coverage=False, **options)
    except (RedisClusterException, RedisError, OSError) as exc:  # discovery failed: no listed node answered
        raise StoreUnavailableError(
            f"no node of the Redis Cluster answered ({describe_cluster(url)}): {type(exc).__name__}: {exc}",
            expected="at least one reachable cluster node in redis.url",
            fix="start the cluster, or list more nodes in redis.url (comma separated)",
        ) from exc


def describe_cluster(url: str) -> str:
    """The nodes of ``url`` for messages (never a password)."""
    try:
        urls = node_urls(url)
    except ConfigError:
        return "an invalid redis.url"
    nodes = ",".join(f"{urlsplit(u).hostname}:{urlsplit(u).port or 6379}" for u in urls)
    return f"Redis Cluster via {urlsplit(urls[0]).scheme}://{nodes}"


def cluster_health(client: RedisCluster) -> dict[str, Any]:
    """Which primaries answer, whether they serve (``cluster_state:ok``), and how many slots are served.

    ``ok`` is true only when every one of the 16,384 slots is served by a reachable primary that
    reports ``cluster_state:ok``; ``slots_up / 16384`` is the share of keys still available (0 once
    the survivors of a ``cluster-require-full-coverage yes`` cluster stop serving).
    """
    from redis.exceptions import RedisError

    primaries = []
    slots_up = 0
    slot_counts: dict[str, int] = {}
    for slot, nodes in client.nodes_manager.slots_cache.items():
        if nodes and slot < SLOTS:
            slot_counts[nodes[0].name] = slot_counts.get(nodes[0].name, 0) + 1
    for node in client.get_primaries():
        try:
            info = client.execute_command("CLUSTER INFO", target_nodes=node)
            state = _cluster_state(info)
        except (RedisError, OSError):
            state = "unreachable"
        slots = slot_counts.get(node.name, 0)
        slots_up += slots if state == "ok" else 0
        primaries.append({"node": node.name, "state": state, "slots": slots})
    return {"ok": slots_up == SLOTS, "slots_up": slots_up, "primaries": primaries}


def _cluster_state(info: Any) -> str:
    """``cluster_state`` of a CLUSTER INFO reply (parsed to a dict by redis-py, or raw text)."""
    if isinstance(info, bytes):
        info = info.decode()
    if isinstance(info, str):
        info = dict(line.split(":", 1) for line in info.strip().splitlines() if ":" in line)
    state = info.get("cluster_state", "unknown")
    return (state.decode() if isinstance(state, bytes) else str(state)).strip()


def on_every_primary(client: RedisCluster, check: Callable[[Any], str | None]) -> str | None:
    """``check(node_client)`` on each primary (e.g. its persistence settings); the problems found,
    each prefixed with its node, or None when every primary passes."""
    problems = []
    for node in client.get_primaries():
        problem = check(client.get_redis_connection(node))
        if problem:
            problems.append(f"node {node.name}: {problem}")
    return "; ".join(problems) or None
