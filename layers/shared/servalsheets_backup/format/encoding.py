"""Small, dependency-free encodings shared by the backup formats."""

import base64
import json
from typing import Any


def canonical_json(value: Any) -> bytes:
    """Serialise ``value`` deterministically: sorted keys, no spaces, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def b64encode(data: bytes) -> str:
    """Standard base64 with padding, as text."""
    return base64.b64encode(data).decode("ascii")


def b64decode(text: str) -> bytes:
    """Strict standard base64 decoding; raises ``ValueError`` on bad input."""
    return base64.b64decode(text.encode("ascii"), validate=True)
