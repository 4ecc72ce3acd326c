"""One HTTP exchange with a backend, turned into parsed JSON or one error of `_exceptions` that says what went
wrong and what to do. No policy here (retries, breaker and cache live in `_client`): this is where httpx's
outcomes are classified, and the one place that reads response bodies.
"""

from __future__ import annotations

import email.utils
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from obsmcp.http._config import BackendClientConfig, safe_url
from obsmcp.http._exceptions import (
    BackendConnectError,
    BackendHTTPError,
    BackendRateLimited,
    BackendResponseError,
    BackendTimeout,
)
from obsmcp.http._redact import excerpt


@dataclass(frozen=True, slots=True)
class JsonResult:
    """A backend's parsed JSON answer; `cached_age_s` is None when it was fetched for this call."""

    data: Any
    status: int
    cached_age_s: float | None = None
    # Response headers, lowercased names (paging: Link, X-Hits; rate limits). Set-Cookie is left out.
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def freshness(self) -> str | None:
        """What a tool says about a cached answer: "cached, 42 s old" (None when fresh)."""
        return None if self.cached_age_s is None else f"cached, {int(self.cached_age_s)} s old"


class Request:
    """One prepared call; its repr shows no parameters, headers or body (tracebacks with locals print it)."""

    __slots__ = ("body", "headers", "idempotent", "key", "method", "params", "path", "secrets", "ttl_s")

    def __init__(
        self,
        method: str,
        path: str,
        params: list[tuple[str, str]],
        body: bytes | None,
        headers: Mapping[str, str] | None,
        idempotent: bool,
        ttl_s: float,
        key: str,
        secrets: frozenset[str],
    ) -> None:
        self.method, self.path, self.params, self.body, self.headers = method, path, params, body, headers
        self.idempotent, self.ttl_s, self.key, self.secrets = idempotent, ttl_s, key, secrets

    @property
    def display(self) -> str:
        return f"{self.method} /{self.path}"

    def __repr__(self) -> str:
        return f"<request {self.display}>"


async def exchange(http: httpx.AsyncClient, config: BackendClientConfig, req: Request) -> JsonResult:
    """Send `req` once; its parsed JSON, or the `BackendError` that says what went wrong and what to do."""
    # httpx's exceptions are not chained (`from None`): they hold the request with its headers, which a
    # traceback renderer showing locals would print. What they say is kept in the message.
    ctx: dict[str, Any] = {"backend": config.name, "method": req.method, "path": f"/{req.path}"}
    try:
        response = await http.send(
            http.build_request(req.method, req.path, params=tuple(req.params), content=req.body, headers=req.headers),
            stream=True,
        )
    except httpx.ConnectTimeout:
        raise BackendConnectError(
            f"could not connect to {config.name} at {config.display_url} within "
            f"{config.connect_timeout_s:g} s: check that the host is reachable from here and base_url "
            "is right",
            reason="connect_timeout",
            **ctx,
        ) from None
    except httpx.TimeoutException as exc:
        raise _timeout(config, req, exc, ctx) from None
    except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
        raise BackendConnectError(
            f"{config.name} closed the connection without answering {req.display} ({_why(exc, req)}): "
            "retry; if it persists, check the backend and any proxy in front of it",
            reason="reset",
            **ctx,
        ) from None
    except httpx.TransportError as exc:
        raise BackendConnectError(
            f"could not connect to {config.name} at {config.display_url} ({_why(exc, req)}): check that "
            "it runs and that base_url is right",
            reason="connect",
            **ctx,
        ) from None
    try:
        body = await response.aread()
    except httpx.TimeoutException as exc:
        raise _timeout(config, req, exc, ctx) from None
    except httpx.DecodingError as exc:
        raise BackendResponseError(
            f"{config.name} answered {req.display} with a body that could not be decoded ({_why(exc, req)})",
            status=response.status_code,
            excerpt="",
            truncated=False,
            **ctx,
        ) from None
    except httpx.TransportError as exc:
        raise BackendResponseError(
            f"{config.name} answered {req.display} with a truncated body ({response.num_bytes_downloaded} "
            f"bytes, then {_why(exc, req)}): retry; if it persists, narrow the query or check proxies",
            status=response.status_code,
            excerpt="",
            truncated=True,
            **ctx,
        ) from None
    finally:
        await response.aclose()
    if response.status_code >= 300:
        raise _http_error(config, req, response, body, ctx)
    headers = {k.lower(): v for k, v in response.headers.items() if k.lower() != "set-cookie"}
    if response.status_code == 204:
        return JsonResult(None, 204, headers=headers)
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise _bad_json(config, req, response, body, exc, ctx) from None
    return JsonResult(data, response.status_code, headers=headers)


def _timeout(
    config: BackendClientConfig, req: Request, exc: httpx.TimeoutException, ctx: dict[str, Any]
) -> BackendTimeout:
    t = config.read_timeout_s
    if isinstance(exc, httpx.PoolTimeout):
        return BackendTimeout(
            f"all {config.max_connections} connections to {config.name} stayed busy for {t:g} s "
            f"(pool timeout) before {req.display} could be sent: retry, or raise max_connections",
            phase="pool",
            timeout_s=t,
            **ctx,
        )
    phase = "write" if isinstance(exc, httpx.WriteTimeout) else "read"
    return BackendTimeout(
        f"{config.name} did not answer {req.display} within {t:g} s ({phase} timeout): narrow the time range "
        "or the query, or raise read_timeout_s for this backend",
        phase=phase,
        timeout_s=t,
        **ctx,
    )


def _http_error(
    config: BackendClientConfig, req: Request, response: httpx.Response, body: bytes, ctx: dict[str, Any]
) -> BackendHTTPError:
    status = response.status_code
    quoted = excerpt(body, req.secrets)
    after = _retry_after_s(response.headers.get("retry-after"))
    if status == 429 and after is None:
        # Datadog answers 429 without Retry-After; its X-RateLimit-Reset says when the limit resets.
        after = _rate_limit_reset_s(response.headers.get("x-ratelimit-reset"))
    if status == 429:
        when = f"retry in {math.ceil(after)} s" if after is not None else "retry later"
        return BackendRateLimited(
            f"{config.name} rate-limited obsmcp (429) on {req.display}: {when}" + (f" ({quoted})" if quoted else ""),
            status=status,
            excerpt=quoted,
            retry_after_s=after,
            **ctx,
        )
    if status < 400:
        target = safe_url(str(response.url.join(response.headers.get("location", ""))))
        message = (
            f"{config.name} answered {status} to {req.display}, a redirect to {target}: obsmcp does not follow "
            "redirects (credentials must not go to another host): set base_url to the address it points at"
        )
    else:
        message = f"{config.name} answered {status} to {req.display}" + (f": {quoted}" if quoted else "")
        message += _STATUS_HINTS.get(status, ": the backend is failing; retry later" if status >= 500 else "")
    return BackendHTTPError(message, status=status, excerpt=quoted, retry_after_s=after, **ctx)


def _bad_json(
    config: BackendClientConfig,
    req: Request,
    response: httpx.Response,
    body: bytes,
    exc: ValueError,
    ctx: dict[str, Any],
) -> BackendResponseError:
    # A decoding error at the very end of the text means the JSON stopped early: the body was cut (a
    # close-delimited answer, or an empty one); an error before the end means it is not JSON at all.
    truncated = isinstance(exc, json.JSONDecodeError) and exc.pos >= len(exc.doc.rstrip())
    quoted = excerpt(body, req.secrets)
    if truncated:
        message = (
            f"{config.name} answered {req.display} with a truncated body ({len(body)} bytes, the JSON stops "
            "early): retry; if it persists, narrow the query or check proxies in between"
        )
    else:
        kind = response.headers.get("content-type", "").split(";")[0].strip() or "a body"
        message = (
            f"{config.name} answered {req.display} with {kind} that is not JSON ({quoted}): check that base_url "
            f"points at the {config.kind or 'backend'} API itself, not a login page or a proxy"
        )
    return BackendResponseError(message, status=response.status_code, excerpt=quoted, truncated=truncated, **ctx)


_STATUS_HINTS = {
    401: ": check the credentials (token or API key) configured for this backend",
    403: ": the configured credentials lack a permission this request needs",
    404: ": check base_url (including any path prefix) and the names in the request",
}


def _why(exc: Exception, req: Request) -> str:
    """httpx's own words, without any secret of the request."""
    text = str(exc) or type(exc).__name__
    for secret in req.secrets:
        text = text.replace(secret, "[REDACTED]")
    return text[:200]


def _rate_limit_reset_s(value: str | None) -> float | None:
    """X-RateLimit-Reset as seconds to wait. Datadog sends the seconds until its rate-limit period resets
    (docs.datadoghq.com/api/latest/rate-limits); some APIs (GitHub's) send the reset time as a Unix epoch,
    told apart by size: no rate-limit period lasts 30 years."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    if not math.isfinite(seconds):
        return None
    if seconds > 10**9:
        seconds -= datetime.now(UTC).timestamp()
    return max(0.0, seconds)


def _retry_after_s(value: str | None) -> float | None:
    """Retry-After as seconds to wait: delay-seconds, or an HTTP-date (RFC 9110 section 10.2.3)."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
