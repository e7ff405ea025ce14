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


def test_the_moto_patch_decrypts_under_multi_region_keys_and_leaves_other_blobs_alone() -> None:
    """The stand-in's fix: without it moto truncates mrk- key ids (40 characters) in its blobs."""
    import boto3
    from moto import mock_aws

    with mock_aws():
        kms = boto3.client("kms", region_name="us-east-1")
        mrk = kms.create_key(MultiRegion=True)["KeyMetadata"]["KeyId"]
        plain = kms.create_key()["KeyMetadata"]["KeyId"]
        kms.replicate_key(KeyId=mrk, ReplicaRegion="us-west-2")
        west = boto3.client("kms", region_name="us-west-2")
        blob = kms.encrypt(KeyId=mrk, Plaintext=b"k" * 32)["CiphertextBlob"]
        assert west.decrypt(CiphertextBlob=blob)["Plaintext"] == b"k" * 32
        assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"k" * 32
        ordinary = kms.encrypt(KeyId=plain, Plaintext=b"p")["CiphertextBlob"]
        assert (
            ordinary.startswith(plain.encode()) and kms.decrypt(CiphertextBlob=ordinary)["Plaintext"] == b"p"
        )
