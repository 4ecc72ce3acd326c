"""The policy of one backend instance: where it is, how long to wait, when to retry, trip, cache and throttle.

Defaults are DESIGN.md's "Remote calls". Sources build one `BackendClientConfig` per configured backend
instance (`sources/config.py` `BackendConfig` is the user-facing table; this is what the client needs of it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Retries of idempotent reads on connect errors, resets, 429, 502, 503, 504 and (once) a truncated body."""

    max_attempts: int = 3  # the first try included; 1 disables retries
    backoff_base_s: float = 0.5  # full jitter: wait uniform(0, min(backoff_max_s, base * 2**(attempt-1)))
    backoff_max_s: float = 10.0
    # A Retry-After longer than this is not waited for: the error carries it so the agent can decide.
    max_retry_after_s: float = 30.0

    def __post_init__(self) -> None:
        _check(self.max_attempts >= 1, "retry.max_attempts must be >= 1 (1 means no retries)")
        _check(self.backoff_base_s >= 0 and self.backoff_max_s >= 0, "retry backoff times must be >= 0")
        _check(self.max_retry_after_s >= 0, "retry.max_retry_after_s must be >= 0")


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    """Open after `failure_threshold` consecutive failures; let one probe through after `open_s`."""

    failure_threshold: int = 5
    open_s: float = 60.0

    def __post_init__(self) -> None:
        _check(self.failure_threshold >= 1, "breaker.failure_threshold must be >= 1")
        _check(self.open_s > 0, "breaker.open_s must be > 0")


@dataclass(frozen=True, slots=True)
class CachePolicy:
    """TTLs of the two cache classes (0 disables one) and the bound on entries per backend."""

    metadata_ttl_s: float = 300.0  # metric names, label values, projects: slow-changing
    query_ttl_s: float = 15.0  # query results: short, so an agent retrying a question does not re-run it
    max_entries: int = 1024

    def __post_init__(self) -> None:
        _check(self.metadata_ttl_s >= 0 and self.query_ttl_s >= 0, "cache TTLs must be >= 0 (0 disables)")
        _check(self.max_entries >= 1, "cache.max_entries must be >= 1")


@dataclass(frozen=True, slots=True)
class RateLimit:
    """Token bucket: `per_s` requests per second on average, bursts of up to `burst` (default: `per_s`)."""

    per_s: float = 20.0
    burst: float | None = None

    def __post_init__(self) -> None:
        _check(self.per_s > 0, "rate_limit.per_s must be > 0 (use rate_limit=None to disable)")
        _check(self.burst is None or self.burst >= 1, "rate_limit.burst must be >= 1")

    @property
    def capacity(self) -> float:
        return self.burst if self.burst is not None else max(1.0, self.per_s)


@dataclass(frozen=True)
class BackendClientConfig:
    """One backend instance ("prometheus-prod"): several instances of one kind are normal."""

    name: str  # the instance name: metrics' `backend` label, log events, error messages, backend_states()
    base_url: str  # http(s)://host[:port][/prefix]; request paths are relative to it
    kind: str = ""  # prometheus, loki, ... (informational: backend_states() shows it)
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 30.0
    # Sent with every request: tokens and API keys go here (or in a request's `headers`). Never logged or
    # printed: repr=False, and their values are redacted from every error excerpt.
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    retry: RetryPolicy = RetryPolicy()
    breaker: BreakerPolicy = BreakerPolicy()
    cache: CachePolicy = CachePolicy()
    rate_limit: RateLimit | None = RateLimit()
    max_connections: int = 10  # the pool: keep-alive connections are reused across requests
    verify_tls: bool = True

    def __post_init__(self) -> None:
        _check(bool(self.name.strip()), "a backend needs a name (e.g. prometheus-prod)")
        parts = urlsplit(self.base_url)
        _check(
            parts.scheme in ("http", "https") and bool(parts.netloc),
            f"backend {self.name}: base_url {safe_url(self.base_url)!r} is not an http(s) URL: "
            "write it like http://host:9090",
        )
        _check(not parts.query, f"backend {self.name}: base_url must not carry a query string: use params=")
        _check(self.connect_timeout_s > 0 and self.read_timeout_s > 0, f"backend {self.name}: timeouts must be > 0")
        _check(self.max_connections >= 1, f"backend {self.name}: max_connections must be >= 1")

    @property
    def display_url(self) -> str:
        """base_url without user info: safe for messages and status pages."""
        return safe_url(self.base_url)


def safe_url(url: str) -> str:
    """scheme://host[:port]/path of a URL: user info, query and fragment dropped (they may carry secrets)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:  # a malformed port: show none rather than fail while reporting another error
        port = ""
    return f"{parts.scheme}://{host}{port}{parts.path}"
