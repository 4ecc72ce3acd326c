"""The one resilient HTTP client for remote backends (DESIGN.md "Remote calls").

Every source (Prometheus, Loki, Tempo, Jaeger, Sentry, Datadog) calls its backend through a `BackendClient`,
so each gets, by construction: timeouts (connect 5 s, read 30 s), retries of idempotent reads on connect
errors, resets, 429, 502, 503 and 504 with full-jitter exponential backoff honouring Retry-After, a circuit
breaker per backend instance, a TTL cache keyed by normalized fingerprints, single-flight for identical
in-flight requests, a token-bucket rate limit, pooled connections, structured log events (`api_retry`,
`circuit_breaker_state_change`, `cache_hit`, `cache_miss`) and the backend metrics of `obsmcp.metrics`.

    client = backend_client(BackendClientConfig(name="prometheus-prod", base_url="http://prom:9090",
                                                headers={"Authorization": f"Bearer {token}"}))
    result = await client.get_json("/api/v1/labels", cache="metadata")
    result.data, result.freshness          # {...}, "cached, 42 s old" (or None)

Modules: `_config` (policies), `_exceptions` (the error hierarchy), `_breaker`, `_cache` (fingerprints, TTL
cache), `_redact` (no secret in logs or messages), `_client` (the client, its threading model, the registry).
"""

from obsmcp.http._client import (
    BackendClient,
    BackendState,
    CacheClass,
    aclose_all,
    backend_client,
    backend_states,
    close_all,
)
from obsmcp.http._config import BackendClientConfig, BreakerPolicy, CachePolicy, RateLimit, RetryPolicy, safe_url
from obsmcp.http._exceptions import (
    BackendConnectError,
    BackendError,
    BackendHTTPError,
    BackendRateLimited,
    BackendResponseError,
    BackendTimeout,
    BackendUnavailable,
)
from obsmcp.http._exchange import JsonResult
from obsmcp.http._loop import LOOP as CLIENT_LOOP  # the one event loop thread every backend client runs on
from obsmcp.http._redact import excerpt, redact_known

__all__ = [
    "CLIENT_LOOP",
    "BackendClient",
    "BackendClientConfig",
    "BackendConnectError",
    "BackendError",
    "BackendHTTPError",
    "BackendRateLimited",
    "BackendResponseError",
    "BackendState",
    "BackendTimeout",
    "BackendUnavailable",
    "BreakerPolicy",
    "CacheClass",
    "CachePolicy",
    "JsonResult",
    "RateLimit",
    "RetryPolicy",
    "aclose_all",
    "backend_client",
    "backend_states",
    "close_all",
    "excerpt",
    "redact_known",
    "safe_url",
]
