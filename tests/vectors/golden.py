"""Golden backup sets: what a set written by an earlier format version must still restore to.

``make_golden_sets.py`` writes a set with the code of the time into ``sets-v<N>/`` together
with ``expected.json`` (what the source held, computed from the source, not from the set); the
tests in ``tests/integration/test_golden_sets.py`` load those objects into a fresh bucket and
restore them with today's code. A set directory is never regenerated once committed: it is the
proof that today's readers still read what an earlier writer wrote.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import redis

VECTORS = Path(__file__).resolve().parent
ESCROW_KEY_FILE = "escrow-x25519.pem"  # test-only key: the sets' data keys are also wrapped for it


def value_digest(client: redis.Redis, key: bytes) -> str | None:
    """SHA-256 over a key's type and value, independent of the server's DUMP encoding.

    None when the key expired since it was listed.
    """
    kind = client.type(key).decode()
    if kind == "none":
        return None
    if kind == "string":
        value: Any = client.get(key)
    elif kind == "hash":
        value = sorted(client.hgetall(key).items())
    elif kind == "list":
        value = client.lrange(key, 0, -1)
    elif kind == "set":
        value = sorted(client.smembers(key))
    elif kind == "zset":
        value = client.zrange(key, 0, -1, withscores=True)
    elif kind == "stream":
        value = client.xrange(key)
    else:
        raise ValueError(f"golden sets hold no {kind} keys")
    return kind + ":" + hashlib.sha256(repr(value).encode()).hexdigest()


def keyspace(client: redis.Redis) -> dict[str, dict[str, Any]]:
    """Every key of db 0 with its value digest and remaining TTL in ms (-1: none)."""
    found = {}
    for key in client.scan_iter(count=1000):
        digest, pttl = value_digest(client, key), int(client.pttl(key))
        if digest is not None and pttl != -2:  # -2: expired in between
            found[key.decode()] = {"digest": digest, "pttl": pttl}
    return found


def golden_dirs() -> list[Path]:
    """Every committed golden set directory, oldest format first."""
    return sorted(path.parent for path in VECTORS.glob("sets-v*/*/expected.json"))


def expected(set_dir: Path) -> dict[str, Any]:
    """What the source held when the golden set was written."""
    return dict(json.loads((set_dir / "expected.json").read_text()))
