"""The RDB snapshot over the replication protocol (adapters/redis_replication.py), against real
redis-servers on 127.0.0.1: diskless and disk-based, a server that refuses SYNC, and a proxy
that cuts or corrupts the stream (none of them may end as a complete stream)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
import redis

from servalsheets_backup.adapters.redis_replication import RdbStream
from servalsheets_backup.errors import InvalidRdbError, RedisBackupError, TransientError
from servalsheets_backup.format.rdb_entries import RdbEntryReader
from servalsheets_backup_local.testing.redis_server import RedisServer, free_port, start_redis
from servalsheets_backup_local.testing.seed import seed_servalsheets

pytestmark = pytest.mark.integration

KEYS = 3000


@pytest.fixture(params=["diskless", "disk"])
def seeded(request: pytest.FixtureRequest) -> Iterator[RedisServer]:
    diskless = "yes" if request.param == "diskless" else "no"
    server = start_redis(extra_args=["--repl-diskless-sync", diskless])
    client = redis.Redis.from_url(server.url)
    seed_servalsheets(client, KEYS, seed=11)
    client.close()
    try:
        yield server
    finally:
        server.stop()


def test_the_stream_is_a_validated_snapshot_of_every_key(seeded: RedisServer) -> None:
    client = redis.Redis.from_url(seeded.url)
    try:
        stream = RdbStream(seeded.url)
        data = b"".join(stream)
        live = set(client.scan_iter(count=1000))
        assert client.info("replication")["connected_slaves"] == 0  # rdb-only: never a replica
    finally:
        client.close()
    assert stream.info is not None and stream.info.checksum_verified and stream.info.size == len(data)
    keys = {entry.key for entry in RdbEntryReader([data])}
    # The seed's one short-lived key may expire between the snapshot and the SCAN.
    assert len(keys ^ live) <= 1 and all(key.startswith(b"code:") for key in keys ^ live)


def test_a_server_that_refuses_sync_names_the_mode_to_use() -> None:
    server = start_redis(extra_args=["--rename-command", "SYNC", ""])
    try:
        with pytest.raises(RedisBackupError, match=r"refused SYNC .*RedisMode=logical"):
            list(RdbStream(server.url))
    finally:
        server.stop()


def test_an_acl_user_without_sync_is_refused_the_same_way(redis_server: RedisServer) -> None:
    admin = redis.Redis.from_url(redis_server.url)
    admin.execute_command(
        "ACL", "SETUSER", "backup", "on", ">pw-backup", "~*", "&*", "+@all", "-sync", "-psync"
    )
    admin.close()
    url = f"redis://backup:pw-backup@127.0.0.1:{redis_server.port}/0"
    with pytest.raises(RedisBackupError, match=r"refused SYNC \(NOPERM.*RedisMode=logical"):
        list(RdbStream(url))


class Proxy:
    """Forwards 127.0.0.1 connections to a server; cuts or corrupts what the server sends."""

    def __init__(self, upstream: int, *, cut_after: int | None = None, flip_at: int | None = None) -> None:
        self.upstream, self.cut_after, self.flip_at = upstream, cut_after, flip_at
        self.listener = socket.create_server(("127.0.0.1", free_port()))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                downstream, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream))
            threading.Thread(target=self._pump, args=(downstream, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, downstream, True), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, from_server: bool) -> None:
        sent = 0
        try:
            while data := source.recv(65536):
                if from_server and self.flip_at is not None and sent <= self.flip_at < sent + len(data):
                    at = self.flip_at - sent
                    data = data[:at] + bytes([data[at] ^ 0x20]) + data[at + 1 :]
                if from_server and self.cut_after is not None and sent + len(data) > self.cut_after:
                    sink.sendall(data[: self.cut_after - sent])
                    break
                sink.sendall(data)
                sent += len(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                end.close()

    def close(self) -> None:
        self.listener.close()


@pytest.mark.parametrize("cut_after", [20, 5000, 150_000])
def test_a_connection_cut_mid_stream_never_ends_as_a_complete_stream(
    seeded: RedisServer, cut_after: int
) -> None:
    proxy = Proxy(seeded.port, cut_after=cut_after)
    try:
        with pytest.raises((InvalidRdbError, TransientError)):
            for _chunk in RdbStream(f"redis://127.0.0.1:{proxy.port}/0", timeout=5):
                pass
    finally:
        proxy.close()


def test_a_corrupted_byte_fails_the_checksum(seeded: RedisServer) -> None:
    proxy = Proxy(seeded.port, flip_at=100_000)
    try:
        with pytest.raises(InvalidRdbError, match="checksum|CRC|corrupt|length|entries"):
            list(RdbStream(f"redis://127.0.0.1:{proxy.port}/0", timeout=5))
    finally:
        proxy.close()
