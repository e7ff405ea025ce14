"""The redis fixture starts a real server on loopback and stops it by pid."""

import redis

from servalsheets_backup_local.testing.redis_server import pid_alive, start_redis


def test_server_answers_on_loopback_and_stops_by_pid() -> None:
    server = start_redis()
    client = redis.Redis.from_url(server.url)
    assert client.ping()
    assert client.config_get("bind")["bind"] == "127.0.0.1"
    client.close()
    server.stop()
    assert not pid_alive(server.pid)
