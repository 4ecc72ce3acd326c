"""The errors of the resilient HTTP client, in one hierarchy so a caller catches at the level it can act on.

    BackendError                   a remote backend did not give a usable answer (base class)
    ├── BackendUnavailable         its circuit is open: obsmcp fails fast; `retry_in_s` says when it probes again
    ├── BackendTimeout             no answer within the read (or write, or pool) timeout: narrow the query
    ├── BackendConnectError        refused, DNS, TLS, connect timeout, or the connection reset before an answer
    ├── BackendHTTPError           an answer with a status >= 300: `status`, `excerpt` (short, redacted body)
    │   └── BackendRateLimited     a 429 that retries did not get past: `retry_after_s` when the backend said
    └── BackendResponseError       a 2xx answer that is not JSON: `truncated` tells a cut body from a wrong one

Every message names the backend instance and the request (method and path: never the query string, headers
or body, which may carry secrets) and says what to try next, so a source can pass it on or prefix its own
meaning ("Datadog answered 403 ...: the application key lacks the `metrics_read` scope").
"""

from __future__ import annotations


class BackendError(Exception):
    """A remote backend did not give a usable answer."""

    def __init__(self, message: str, *, backend: str, method: str = "", path: str = "") -> None:
        super().__init__(message)
        self.backend = backend
        self.method = method
        self.path = path

    @property
    def message(self) -> str:
        return str(self.args[0])


class BackendUnavailable(BackendError):
    """The backend's circuit breaker is open (or a probe is checking it): the request was not sent."""

    def __init__(self, message: str, *, backend: str, retry_in_s: float, method: str = "", path: str = "") -> None:
        super().__init__(message, backend=backend, method=method, path=path)
        self.retry_in_s = retry_in_s


class BackendTimeout(BackendError):
    """The backend took longer than the timeout of `phase` ("read", "write" or "pool")."""

    def __init__(
        self, message: str, *, backend: str, phase: str, timeout_s: float, method: str = "", path: str = ""
    ) -> None:
        super().__init__(message, backend=backend, method=method, path=path)
        self.phase = phase
        self.timeout_s = timeout_s


class BackendConnectError(BackendError):
    """No answer came back: `reason` is "connect" (refused, DNS, TLS), "connect_timeout" or "reset"."""

    def __init__(self, message: str, *, backend: str, reason: str, method: str = "", path: str = "") -> None:
        super().__init__(message, backend=backend, method=method, path=path)
        self.reason = reason


class BackendHTTPError(BackendError):
    """The backend answered with a status >= 300; `excerpt` is the start of its body, secrets redacted."""

    def __init__(
        self,
        message: str,
        *,
        backend: str,
        status: int,
        excerpt: str,
        retry_after_s: float | None = None,
        method: str = "",
        path: str = "",
    ) -> None:
        super().__init__(message, backend=backend, method=method, path=path)
        self.status = status
        self.excerpt = excerpt
        self.retry_after_s = retry_after_s


class BackendRateLimited(BackendHTTPError):
    """429 Too Many Requests, after the retries the policy allows (or with a Retry-After too long to wait)."""


class BackendResponseError(BackendError):
    """A 2xx answer whose body is not JSON: cut short (`truncated`) or something else (an HTML page, ...)."""

    def __init__(
        self,
        message: str,
        *,
        backend: str,
        status: int,
        excerpt: str,
        truncated: bool,
        method: str = "",
        path: str = "",
    ) -> None:
        super().__init__(message, backend=backend, method=method, path=path)
        self.status = status
        self.excerpt = excerpt
        self.truncated = truncated
