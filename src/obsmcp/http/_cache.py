"""Normalized request fingerprints and the TTL cache they key.

The cache is written here rather than taken from cachetools (the library for it): this environment holds
cachetools at 4.2.1 through drain3's exact pin, it ships no type information, and the client would still have
to keep the insertion time beside each value (answers say "cached, N s old"), give each entry its own TTL
(metadata vs query results) and add a lock (entries are read from callers' threads) — which leaves the
thirty lines below.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Scalar = str | int | float | bool
ParamValue = Scalar | Sequence[Scalar] | None
Params = Mapping[str, ParamValue] | Sequence[tuple[str, Scalar]]


def normalize_params(params: Params | None) -> list[tuple[str, str]]:
    """(name, value) pairs as sent: sorted by name (a stable sort keeps repeated names' order), None dropped.

    Values are rendered the way the client sends them (True -> "true"), so two spellings of one request
    share a fingerprint and the request sent is exactly the one fingerprinted.
    """
    if params is None:
        return []
    pairs: list[tuple[str, str]] = []
    items: Iterable[tuple[str, Any]] = params.items() if isinstance(params, Mapping) else params
    for name, value in items:
        if value is None:
            continue
        if isinstance(value, list | tuple):
            pairs.extend((str(name), _render(v)) for v in value if v is not None)
        else:
            pairs.append((str(name), _render(value)))
    pairs.sort(key=lambda kv: kv[0])
    return pairs


def _render(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def normalize_path(path: str) -> str:
    """A request path relative to the backend's base URL: no leading or repeated slashes; a trailing slash is
    kept (Sentry's API needs it)."""
    if "://" in path or path.startswith("//"):
        # Credentials in the default headers must never go to another host.
        raise ValueError(f"{path!r} is an absolute URL: pass a path relative to the backend's base_url")
    if "?" in path or "#" in path:
        raise ValueError(f"{path!r} carries a query string: pass query parameters in params=")
    joined = "/".join(segment for segment in path.split("/") if segment)
    return joined + "/" if path.endswith("/") and joined else joined


def canonical_json(body: Any) -> bytes:
    """JSON with sorted keys and no spacing: the request body sent, and the one fingerprinted."""
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def header_identity(headers: Iterable[tuple[str, str]]) -> str:
    """A digest of every header sent (credentials, tenant headers such as X-Scope-OrgID): two identities
    never share a cache entry or an in-flight request, and the digest reveals nothing of the values."""
    canonical = sorted((k.lower(), v) for k, v in headers)
    return hashlib.blake2b(json.dumps(canonical).encode(), digest_size=16).hexdigest()


def fingerprint(method: str, path: str, params: list[tuple[str, str]], body: bytes | None, identity: str) -> str:
    canonical = json.dumps([method, path, params, body.decode() if body is not None else None, identity])
    return hashlib.blake2b(canonical.encode(), digest_size=16).hexdigest()


@dataclass(frozen=True, slots=True)
class _Entry:
    value: Any
    stored_at: float
    expires_at: float


class TTLCache:
    """Entries with their own TTL, least recently used evicted beyond `max_entries`; safe across threads."""

    def __init__(self, max_entries: int, clock: Callable[[], float]) -> None:
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._max = max_entries
        self._clock = clock
        self._lock = threading.Lock()

    def get(self, key: str) -> tuple[Any, float] | None:
        """(value, age in seconds), or None when absent or expired."""
        now = self._clock()
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if now >= entry.expires_at:
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return entry.value, now - entry.stored_at

    def put(self, key: str, value: Any, ttl_s: float) -> None:
        now = self._clock()
        with self._lock:
            self._entries[key] = _Entry(value, now, now + ttl_s)
            self._entries.move_to_end(key)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
