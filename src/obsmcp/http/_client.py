"""BackendClient: the one resilient HTTP client through which every source calls its remote backend.

A request walks: fingerprint -> cache (hit: answered on the caller's thread) -> circuit open? (fail fast on
the caller's thread) -> the client loop -> single-flight (identical idempotent requests share one) -> retries
(tenacity) of attempts, each: token bucket (aiolimiter) -> breaker admission -> one pooled httpx exchange
(`_exchange`: parsed JSON, or one error of `_exceptions`) -> breaker, metrics, recent-latency window.

Threading model
---------------
All network I/O of every backend client runs on one private asyncio event loop in a daemon thread named
"obsmcp-http", started on first use. Each client's pooled `httpx.AsyncClient`, breaker, token bucket and
in-flight table live there and are changed by that thread only, so they need no locks, connections are
reused whichever thread asked, and single-flight merges identical requests from any thread or event loop.
`get_json` / `post_json` are coroutines to await on any asyncio event loop (the server's, one that
`asyncio.run` started in a worker thread, or the client loop itself): the request hops to the client loop
(`run_coroutine_threadsafe`) and the caller's loop awaits it without blocking. Two answers never make the
hop: a cache hit (the cache has a lock) and an open circuit's fast failure. Cancelling a caller cancels its
request, except that a request shared by several callers runs on for the others (and fills the cache).
The parsed JSON of one answer is shared by all callers of that request and by cache hits: treat it as
read-only. Shut down with `close_all()` (or `await aclose_all()`), which closes every pool and the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

import httpx
import structlog
from aiolimiter import AsyncLimiter
from tenacity import AsyncRetrying, RetryCallState, stop_after_attempt, wait_random_exponential

from obsmcp import __version__, metrics
from obsmcp.http._breaker import CircuitBreaker, Outcome, State
from obsmcp.http._cache import (
    Params,
    TTLCache,
    canonical_json,
    fingerprint,
    header_identity,
    normalize_params,
    normalize_path,
)
from obsmcp.http._config import BackendClientConfig
from obsmcp.http._exceptions import (
    BackendConnectError,
    BackendError,
    BackendHTTPError,
    BackendResponseError,
    BackendTimeout,
    BackendUnavailable,
)
from obsmcp.http._exchange import JsonResult, Request, exchange
from obsmcp.http._loop import LOOP
from obsmcp.http._redact import secret_values

log = structlog.get_logger("obsmcp.http")

CacheClass = Literal["metadata", "query"]
RETRY_STATUSES = frozenset({429, 502, 503, 504})
_WINDOW = 200  # attempts kept per backend for backend_states(): latency percentiles and error rate
_USER_AGENT = f"obsmcp/{__version__}"


@dataclass(frozen=True, slots=True)
class BackendState:
    """One backend as /health and `backend_status` show it; latency and error rate over recent attempts."""

    name: str
    kind: str
    base_url: str
    circuit: State
    retry_in_s: float | None  # when open: seconds until the next probe may go
    consecutive_failures: int
    last_failure: str | None
    recent_requests: int
    error_rate: float | None  # share of recent attempts that failed: connect, reset, timeout, 429, 5xx, bad body
    p50_ms: float | None
    p95_ms: float | None
    cache_entries: int


_CLIENTS: dict[str, BackendClient] = {}
_CLIENTS_LOCK = threading.Lock()


class BackendClient:
    """The resilient client of one backend instance. Create it with `backend_client(config)`."""

    def __init__(self, config: BackendClientConfig, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.name = config.name
        self._clock = clock
        self._closed = False
        self._http = httpx.AsyncClient(
            base_url=config.base_url,
            headers={"User-Agent": _USER_AGENT, **config.headers},
            timeout=httpx.Timeout(
                connect=config.connect_timeout_s,
                read=config.read_timeout_s,
                write=config.read_timeout_s,
                pool=config.read_timeout_s,
            ),
            limits=httpx.Limits(
                max_connections=config.max_connections, max_keepalive_connections=config.max_connections
            ),
            # A redirect may lead to another host: credentials in custom headers (DD-API-KEY, ...) would follow.
            follow_redirects=False,
            verify=config.verify_tls,
        )
        self._breaker = CircuitBreaker(
            config.breaker.failure_threshold, config.breaker.open_s, clock, self._circuit_changed
        )
        self._cache = TTLCache(config.cache.max_entries, clock)
        rate = config.rate_limit
        # aiolimiter's leaky bucket of `capacity` draining at `per_s` is a token bucket of that burst and rate.
        self._limiter = AsyncLimiter(rate.capacity, rate.capacity / rate.per_s) if rate is not None else None
        self._jitter = wait_random_exponential(multiplier=config.retry.backoff_base_s, max=config.retry.backoff_max_s)
        self._inflight: dict[str, asyncio.Task[JsonResult]] = {}
        self._window: deque[tuple[float, bool]] = deque(maxlen=_WINDOW)
        self._window_lock = threading.Lock()
        self._secrets = secret_values(config.headers.items())
        self._identity = header_identity(config.headers.items())
        self._hits = metrics.CACHE_HITS.labels(self.name)
        self._misses = metrics.CACHE_MISSES.labels(self.name)
        self._throttled = metrics.BACKEND_THROTTLED.labels(self.name)
        self._duration = metrics.BACKEND_DURATION.labels(self.name)
        with _CLIENTS_LOCK:
            if config.name in _CLIENTS:
                raise ValueError(
                    f"backend {config.name} already has a client: get it with backend_client(config), or close it first"
                )
            _CLIENTS[config.name] = self
        metrics.CIRCUIT_STATE.labels(self.name).set(0)

    def __repr__(self) -> str:
        return f"<BackendClient {self.name} {self.config.display_url}>"

    # -- public surface ------------------------------------------------------------------------------------

    async def get_json(
        self,
        path: str,
        params: Params | None = None,
        *,
        cache: CacheClass | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> JsonResult:
        """GET `path` (relative to base_url) and parse the JSON answer. `cache`: "metadata" (long TTL) for
        names, labels and projects, "query" (short TTL) for query results, None to always ask the backend.
        `headers` are added to the backend's own (per-call credentials, a tenant header) and are part of the
        cache key, so two identities never share an answer."""
        return await self._call(self._prepare("GET", path, params, None, True, cache, headers))

    async def post_json(
        self,
        path: str,
        body: Any,
        *,
        idempotent: bool,
        cache: CacheClass | None = None,
        params: Params | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> JsonResult:
        """POST `body` as JSON. Only an idempotent POST (a query sent as a body) is retried, shared with
        identical in-flight calls, or cached; one that changes something is sent exactly once."""
        if cache is not None and not idempotent:
            raise ValueError(f"POST {path}: only an idempotent request can be cached: pass idempotent=True")
        return await self._call(self._prepare("POST", path, params, canonical_json(body), idempotent, cache, headers))

    def state(self) -> BackendState:
        with self._window_lock:
            window = list(self._window)
        durations = sorted(d for d, _ in window)
        breaker = self._breaker
        circuit = breaker.state
        return BackendState(
            name=self.name,
            kind=self.config.kind,
            base_url=self.config.display_url,
            circuit=circuit,
            retry_in_s=round(breaker.retry_in_s(), 1) if circuit == "open" else None,
            consecutive_failures=breaker.consecutive_failures,
            last_failure=breaker.last_failure,
            recent_requests=len(window),
            error_rate=round(sum(e for _, e in window) / len(window), 4) if window else None,
            p50_ms=round(statistics.median(durations) * 1000, 2) if durations else None,
            p95_ms=round(durations[min(len(durations) - 1, math.ceil(0.95 * len(durations)) - 1)] * 1000, 2)
            if durations
            else None,
            cache_entries=len(self._cache),
        )

    async def aclose(self) -> None:
        """Close the connection pool and remove this backend from backend_states()."""
        if self._forget_client():
            await LOOP.run(self._http.aclose())

    def close(self) -> None:
        """Blocking form of aclose(), for any thread but the client loop's."""
        if self._forget_client():
            LOOP.call(self._http.aclose(), 10)

    # -- the request path -------------------------------------------------------------------------------------

    def _prepare(
        self,
        method: str,
        path: str,
        params: Params | None,
        body: bytes | None,
        idempotent: bool,
        cache: CacheClass | None,
        headers: Mapping[str, str] | None,
    ) -> Request:
        npath = normalize_path(path)
        nparams = normalize_params(params)
        secrets, identity = self._secrets, self._identity
        if headers:
            merged = httpx.Headers(self.config.headers)
            merged.update(headers)
            identity = header_identity(merged.multi_items())
            secrets = secrets | secret_values(headers.items())
        if nparams:
            secrets = secrets | secret_values(nparams)
        ttl = 0.0
        if cache == "metadata":
            ttl = self.config.cache.metadata_ttl_s
        elif cache == "query":
            ttl = self.config.cache.query_ttl_s
        key = fingerprint(method, npath, nparams, body, identity) if idempotent else ""
        return Request(method, npath, nparams, body, headers, idempotent, ttl, key, secrets)

    async def _call(self, req: Request) -> JsonResult:
        if self._closed:
            raise RuntimeError(f"the client of backend {self.name} is closed: get a new one with backend_client()")
        if req.ttl_s > 0:
            hit = self._cache.get(req.key)
            if hit is not None:
                return self._cache_hit(req, hit)
            self._misses.inc()
            log.debug("cache_miss", backend=self.name, path=req.display)
        if self._breaker.refuses():
            metrics.BACKEND_REQUESTS.labels(self.name, "circuit_open").inc()
            raise self._unavailable(req)
        return await LOOP.run(self._on_loop(req))

    def _cache_hit(self, req: Request, hit: tuple[Any, float]) -> JsonResult:
        (data, status, headers), age = hit
        self._hits.inc()
        log.debug("cache_hit", backend=self.name, path=req.display, age_s=round(age, 1))
        return JsonResult(data, status, cached_age_s=age, headers=headers)

    async def _on_loop(self, req: Request) -> JsonResult:
        if not req.idempotent:
            return await self._send(req)
        task = self._inflight.get(req.key)
        if task is None:
            if req.ttl_s > 0 and (hit := self._cache.get(req.key)) is not None:
                # Filled while this request was on its way to the loop (already counted as a miss).
                (data, status, headers), age = hit
                return JsonResult(data, status, cached_age_s=age, headers=headers)
            task = asyncio.get_running_loop().create_task(self._fetch(req))
            self._inflight[req.key] = task
            task.add_done_callback(partial(self._forget_inflight, req.key))
        # shield: one caller giving up must not cancel the request the others wait for.
        return await asyncio.shield(task)

    def _forget_inflight(self, key: str, task: asyncio.Task[JsonResult]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if not task.cancelled():
            task.exception()  # its callers received it; this marks it retrieved even if all of them gave up

    async def _fetch(self, req: Request) -> JsonResult:
        result = await self._send(req)
        if req.ttl_s > 0:
            self._cache.put(req.key, (result.data, result.status, result.headers), req.ttl_s)
        return result

    async def _send(self, req: Request) -> JsonResult:
        policy = self.config.retry
        if not req.idempotent or policy.max_attempts == 1:
            return await self._attempt(req)
        retrying = AsyncRetrying(
            stop=stop_after_attempt(policy.max_attempts),
            wait=self._wait,
            retry=partial(self._should_retry, [0]),
            before_sleep=partial(self._log_retry, req),
            reraise=True,
        )
        result: JsonResult = await retrying(self._attempt, req)
        return result

    def _should_retry(self, truncations: list[int], state: RetryCallState) -> bool:
        exc = state.outcome.exception() if state.outcome is not None else None
        if exc is None or self._breaker.refuses():
            return False  # success, or the circuit just opened: fail now rather than after a backoff
        if isinstance(exc, BackendConnectError):
            return True
        if isinstance(exc, BackendHTTPError):
            if exc.status not in RETRY_STATUSES:
                return False
            return exc.retry_after_s is None or exc.retry_after_s <= self.config.retry.max_retry_after_s
        if isinstance(exc, BackendResponseError) and exc.truncated:
            # One retry: a body cut once is usually a recycled connection or a restarting proxy; cut twice
            # in a row it is likely a size or time limit on the way, and more retries would only repeat a
            # heavy query against a backend that cannot deliver it.
            truncations[0] += 1
            return truncations[0] == 1
        return False

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, BackendHTTPError) and exc.retry_after_s is not None:
            return exc.retry_after_s
        return self._jitter(state)

    def _log_retry(self, req: Request, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        reason = _classify(exc)[0] if isinstance(exc, BackendError) else type(exc).__name__
        wait_s = state.next_action.sleep if state.next_action is not None else 0.0
        metrics.BACKEND_RETRIES.labels(self.name, reason).inc()
        log.warning(
            "api_retry",
            backend=self.name,
            method=req.method,
            path=f"/{req.path}",
            attempt=state.attempt_number,
            reason=reason,
            wait_s=round(wait_s, 3),
        )

    async def _attempt(self, req: Request) -> JsonResult:
        if self._limiter is not None:
            if not self._limiter.has_capacity():
                self._throttled.inc()
            await self._limiter.acquire()
        probe = self._breaker.admit()
        if probe is None:
            metrics.BACKEND_REQUESTS.labels(self.name, "circuit_open").inc()
            raise self._unavailable(req)
        started = self._clock()
        outcome: Outcome = "neutral"  # also when cancelled: a probe that never finished frees its slot
        detail = ""
        try:
            result = await exchange(self._http, self.config, req)
        except BackendError as exc:
            status, outcome, is_error = _classify(exc)
            detail = exc.message[:240]
            self._record(status, self._clock() - started, is_error)
            raise
        else:
            outcome = "success"
            self._record(str(result.status), self._clock() - started, False)
            return result
        finally:
            self._breaker.record(outcome, probe=probe, detail=detail)

    def _unavailable(self, req: Request) -> BackendUnavailable:
        breaker = self._breaker
        if breaker.state == "half_open":
            retry_in = 1.0
            why = "a probe request is checking whether it recovered"
        else:
            retry_in = breaker.retry_in_s()
            why = f"its circuit breaker opened after {breaker.failure_threshold} consecutive failures"
        last = f" (last: {breaker.last_failure})" if breaker.last_failure else ""
        return BackendUnavailable(
            f"backend {self.name} unavailable, retry in {max(1, math.ceil(retry_in))} s: {why}{last}. obsmcp "
            f"fails fast instead of waiting on it: check {self.config.display_url}, or use another backend",
            backend=self.name,
            retry_in_s=retry_in,
            method=req.method,
            path=f"/{req.path}",
        )

    # -- observability ------------------------------------------------------------------------------------------

    def _record(self, status: str, elapsed_s: float, is_error: bool) -> None:
        metrics.BACKEND_REQUESTS.labels(self.name, status).inc()
        self._duration.observe(elapsed_s)
        with self._window_lock:
            self._window.append((elapsed_s, is_error))

    def _circuit_changed(self, previous: State, state: State, breaker: CircuitBreaker) -> None:
        metrics.CIRCUIT_STATE.labels(self.name).set(metrics.CIRCUIT_STATE_VALUE[state])
        metrics.CIRCUIT_TRANSITIONS.labels(self.name, state).inc()
        emit = log.warning if state == "open" else log.info
        emit(
            "circuit_breaker_state_change",
            backend=self.name,
            from_state=previous,
            to_state=state,
            consecutive_failures=breaker.consecutive_failures,
            retry_in_s=round(breaker.retry_in_s(), 1) if state == "open" else None,
            last_failure=breaker.last_failure if state == "open" else None,
        )

    def _forget_client(self) -> bool:
        if self._closed:
            return False
        self._closed = True
        with _CLIENTS_LOCK:
            if _CLIENTS.get(self.name) is self:
                del _CLIENTS[self.name]
                with contextlib.suppress(KeyError):  # never set: nothing to remove
                    metrics.CIRCUIT_STATE.remove(self.name)
        return True


def _classify(exc: BackendError) -> tuple[str, Outcome, bool]:
    """(status label for metrics and retry reasons, breaker outcome, counts in the error rate)."""
    if isinstance(exc, BackendConnectError):
        return exc.reason, "failure", True
    if isinstance(exc, BackendTimeout):
        return "timeout", "neutral", True  # the query's size, not an outage: it does not trip the breaker
    if isinstance(exc, BackendHTTPError):
        failing = exc.status == 429 or exc.status >= 500
        return str(exc.status), "failure" if failing else "neutral", failing
    if isinstance(exc, BackendResponseError):
        return ("truncated_body", "failure", True) if exc.truncated else ("invalid_json", "neutral", True)
    return "error", "neutral", True


# -- the registry ------------------------------------------------------------------------------------------------


def backend_client(config: BackendClientConfig) -> BackendClient:
    """The client of a backend instance: the registered one when its config is unchanged; otherwise a new one
    (one registered under that name with another config is closed: its pool and state are dropped)."""
    with _CLIENTS_LOCK:
        existing = _CLIENTS.get(config.name)
    if existing is not None:
        if existing.config == config:
            return existing
        if existing._forget_client():
            closing = asyncio.run_coroutine_threadsafe(existing._http.aclose(), LOOP.get())
            closing.add_done_callback(partial(_report_close, existing.name))
    return BackendClient(config)


def _report_close(name: str, done: Future[None]) -> None:
    if not done.cancelled() and (exc := done.exception()) is not None:
        log.warning("backend_client_close_failed", backend=name, error=f"{type(exc).__name__}: {exc}")


def backend_states() -> list[BackendState]:
    """The state of every registered backend, by name: circuit, recent latency and error rate."""
    with _CLIENTS_LOCK:
        clients = sorted(_CLIENTS.values(), key=lambda c: c.name)
    return [c.state() for c in clients]


def close_all() -> None:
    """Close every backend client and stop the client loop (blocking; not from the client loop itself)."""
    with _CLIENTS_LOCK:
        clients = list(_CLIENTS.values())
    for client in clients:
        client.close()
    LOOP.stop()


async def aclose_all() -> None:
    """close_all() for async code: awaits the pools' closing, then stops the loop off this event loop."""
    with _CLIENTS_LOCK:
        clients = list(_CLIENTS.values())
    for client in clients:
        await client.aclose()
    await asyncio.to_thread(LOOP.stop)
