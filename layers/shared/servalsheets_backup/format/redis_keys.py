"""ServalSheets key classes (prefixes), the OAuth key set, and Redis glob patterns."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from servalsheets_backup.errors import InvalidInputError

PREFIXES = (
    "dcr:",
    "mcp_consent:",
    "auth:",
    "code:",
    "refresh:",
    "google_tokens:",
    "servalsheets:session:",
    "servalsheets:http-session:",
    "servalsheets:task:",
    "servalsheets:mcp:",
    "servalsheets:capabilities:",
    "servalsheets:etag:",
    "rate:",
    "webhook:",
    "webhooks:",
)
OTHER_PREFIX = "other"
OAUTH_KEY_PATTERNS = (
    "dcr:*",
    "mcp_consent:*",
    "refresh:*",
    "google_tokens:*",
    "webhook:*",
    "webhooks:*",
)

_SERVAL = b"servalsheets"
_TOP_PREFIX = {p[:-1].encode(): p for p in PREFIXES if not p.startswith("servalsheets:")}
_SERVAL_PREFIX = {p.split(":")[1].encode(): p for p in PREFIXES if p.startswith("servalsheets:")}


KeyMatcher = Callable[[bytes], object]
"""Returns something truthy when a key matches (a compiled regex's ``fullmatch``)."""


def key_prefix(key: bytes) -> str:
    """The ServalSheets key family of ``key`` (one of ``PREFIXES``), or ``"other"``."""
    head, sep, rest = key.partition(b":")
    if not sep:
        return OTHER_PREFIX
    if head == _SERVAL:
        sub, sep, _ = rest.partition(b":")
        return _SERVAL_PREFIX.get(sub, OTHER_PREFIX) if sep else OTHER_PREFIX
    return _TOP_PREFIX.get(head, OTHER_PREFIX)


def compile_patterns(patterns: Iterable[str | bytes] | None) -> KeyMatcher | None:
    """A matcher for Redis glob patterns (the semantics of KEYS/SCAN MATCH), or None for all.

    Matching is on raw key bytes, exactly like Redis's ``stringmatchlen``: ``*``, ``?``,
    ``[abc]``, ``[^abc]``, ranges ``[a-z]`` (reversed ranges allowed) and ``\\`` escapes; a
    ``[`` without its ``]`` runs to the end of the pattern. ``str`` patterns are encoded as
    UTF-8 with ``surrogateescape``. A key is kept when any pattern matches it.
    """
    if patterns is None:
        return None
    encoded = [p.encode("utf-8", "surrogateescape") if isinstance(p, str) else p for p in patterns]
    if not encoded:
        raise InvalidInputError("patterns must not be empty; pass None to keep every key")
    regex = b"|".join(b"(?:%s)" % _glob_regex(p) for p in encoded)
    return re.compile(regex, re.DOTALL).fullmatch


def _glob_regex(pattern: bytes) -> bytes:
    out: list[bytes] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == 0x2A:  # *
            out.append(b".*")
        elif c == 0x3F:  # ?
            out.append(b".")
        elif c == 0x5C and i + 1 < n:  # backslash escape
            i += 1
            out.append(b"\\x%02x" % pattern[i])
        elif c == 0x5B:  # [
            i, cls = _glob_class(pattern, i + 1)
            out.append(cls)
        else:
            out.append(b"\\x%02x" % c)
        i += 1
    return b"".join(out)


def _glob_class(pattern: bytes, i: int) -> tuple[int, bytes]:
    """Translate a ``[...]`` class starting after ``[``; returns (index of ``]``, regex)."""
    n = len(pattern)
    negate = i < n and pattern[i] == 0x5E  # ^
    i += negate
    ranges: list[bytes] = []
    while i < n and pattern[i] != 0x5D:  # ]
        if pattern[i] == 0x5C and i + 1 < n:
            i += 1
            ranges.append(b"\\x%02x" % pattern[i])
        elif i + 2 < n and pattern[i + 1] == 0x2D:  # a-z, as Redis: even when z is "]"
            lo, hi = sorted((pattern[i], pattern[i + 2]))
            ranges.append(b"\\x%02x-\\x%02x" % (lo, hi))
            i += 2
        else:
            ranges.append(b"\\x%02x" % pattern[i])
        i += 1
    if not ranges:
        return i, b"." if negate else b"(?!)"
    return i, b"[%s%s]" % (b"^" if negate else b"", b"".join(ranges))
