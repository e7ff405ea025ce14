"""A real Redis Cluster on loopback: ``redis-server --cluster-enabled yes`` processes joined by
``redis-cli --cluster create``, each on a free port with a free cluster-bus port, stopped by pid."""

from __future__ import annotations

import shutil

# bandit B404/B603: runs the redis-cli binary found by shutil.which, with fixed arguments.
import subprocess  # nosec B404
import time
from dataclasses import dataclass, field

import redis

from servalsheets_backup.errors import ConfigurationError
from servalsheets_backup_local.testing.redis_server import RedisServer, free_port, start_redis


@dataclass
class RedisCluster:
    """The primaries of a running cluster; ``stop`` ends every process."""

    nodes: list[RedisServer] = field(default_factory=list)
    password: str | None = None
    bus_ports: list[int] = field(default_factory=list)

    @property
    def url(self) -> str:
        """The URL of the first node: the configured endpoint of a cluster deployment."""
        return self.nodes[0].url

    def client(self) -> redis.RedisCluster:
        """A cluster-aware redis-py client (seeding and independent checks in tests)."""
        node = self.nodes[0]
        return redis.RedisCluster(host="127.0.0.1", port=node.port, password=self.password)

    def stop(self) -> None:
        """Stop every node by pid; idempotent."""
        for node in self.nodes:
            node.stop()


def start_redis_cluster(primaries: int = 3, password: str | None = None) -> RedisCluster:
    """Start ``primaries`` cluster-enabled servers, assign the 16384 slots evenly, wait until ok."""
    if primaries < 1:
        raise ValueError("a cluster needs at least one primary")
    cluster = RedisCluster(password=password)
    try:
        for _ in range(primaries):
            bus_port = free_port()  # not port + 10000, which may be taken or out of range
            extra = ["--cluster-enabled", "yes", "--cluster-port", str(bus_port)]
            extra += ["--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "5000"]
            cluster.nodes.append(start_redis(password=password, extra_args=extra))
            cluster.bus_ports.append(bus_port)
        _create(cluster)
        _wait_ok(cluster)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _redis_cli() -> str:
    path = shutil.which("redis-cli")
    if path is None:
        raise ConfigurationError("redis-cli is missing: install it with `apt-get install -y redis-tools`")
    return path


def _create(cluster: RedisCluster) -> None:
    auth = ["-a", cluster.password, "--no-auth-warning"] if cluster.password else []
    addresses = [f"127.0.0.1:{node.port}" for node in cluster.nodes]
    if len(addresses) < 3:
        # redis-cli --cluster create wants three primaries; fewer are assigned slots by hand.
        _assign_by_hand(cluster)
        return
    done = subprocess.run(  # noqa: S603 - fixed binary and arguments  # nosec B603
        [_redis_cli(), *auth, "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        output = done.stdout[-300:] + done.stderr[-300:]
        raise RuntimeError(f"redis-cli --cluster create failed: {output!r}")


def _assign_by_hand(cluster: RedisCluster) -> None:
    """Meet the nodes and split the slots evenly (one or two primaries)."""
    clients = [redis.Redis(port=node.port, password=cluster.password) for node in cluster.nodes]
    share = 16384 // len(clients)
    first = ("127.0.0.1", cluster.nodes[0].port, cluster.bus_ports[0])
    for index, client in enumerate(clients):
        last = 16383 if index == len(clients) - 1 else (index + 1) * share - 1
        client.execute_command("CLUSTER", "ADDSLOTSRANGE", index * share, last)
        if index:
            client.execute_command("CLUSTER", "MEET", *first)
    for client in clients:
        client.close()


def _wait_ok(cluster: RedisCluster, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    clients = [redis.Redis(port=node.port, password=cluster.password) for node in cluster.nodes]
    try:
        while time.monotonic() < deadline:
            states = [client.cluster("info") for client in clients]
            known = [int(state.get("cluster_known_nodes", 0)) for state in states]
            if all(s.get("cluster_state") == "ok" for s in states) and min(known) == len(clients):
                return
            time.sleep(0.1)
    finally:
        for client in clients:
            client.close()
    raise RuntimeError(f"the {len(clients)}-node cluster did not reach cluster_state:ok in {timeout:.0f} s")
