"""What the Prometheus, Loki, Tempo, Jaeger and Sentry sources share about talking to their backend: the
resilient client's policy built from a `BackendConfig`, per-call credentials, and HTTP errors turned into
messages that say what to do. (Datadog authenticates with its own key headers: see sources/datadog.py.)
"""

from __future__ import annotations

import base64

from obsmcp.http import BackendClientConfig, BackendHTTPError, CachePolicy, RateLimit
from obsmcp.sources.base import SourceError
from obsmcp.sources.config import BackendConfig

_TITLE = {"loki": "Loki", "tempo": "Tempo", "jaeger": "Jaeger"}


def title(kind: str) -> str:
    return _TITLE.get(kind, kind)


def client_config(cfg: BackendConfig) -> BackendClientConfig:
    """The resilient client's policy for one configured backend; auth and tenant headers included (never
    logged: the client keeps headers out of its repr, logs and error excerpts)."""
    headers = dict(cfg.headers)  # X-Scope-OrgID for a multi-tenant Loki or Tempo goes here
    if cfg.token is not None:
        headers["Authorization"] = f"Bearer {cfg.token.get_secret_value()}"
    elif cfg.username is not None:
        password = cfg.password.get_secret_value() if cfg.password is not None else ""
        headers["Authorization"] = "Basic " + base64.b64encode(f"{cfg.username}:{password}".encode()).decode()
    return BackendClientConfig(
        name=cfg.name,
        base_url=cfg.base_url,
        kind=cfg.kind,
        connect_timeout_s=cfg.connect_timeout_s,
        read_timeout_s=cfg.read_timeout_s,
        headers=headers,
        cache=CachePolicy(metadata_ttl_s=cfg.metadata_cache_ttl_s, query_ttl_s=cfg.query_cache_ttl_s),
        rate_limit=RateLimit(cfg.rate_limit_per_s) if cfg.rate_limit_per_s > 0 else None,
    )


def call_headers(cfg: BackendConfig) -> dict[str, str] | None:
    """Headers to add to one call: a token file is read at every call, so a rotated secret takes effect
    without a restart (an inline token is already in the client's own headers)."""
    if cfg.token_file is not None:
        return {"Authorization": f"Bearer {cfg.bearer()}"}
    return None


def http_error(cfg: BackendConfig, e: BackendHTTPError, what: str, *, not_found: str | None = None) -> SourceError:
    """A backend's refusal as a SourceError naming the backend, what failed and the fix; the backend's own
    words (its error body, redacted) are quoted, since they usually say exactly what is wrong."""
    who = f"{title(cfg.kind)} backend {cfg.name}"
    said = f": {e.excerpt!r}" if e.excerpt else ""
    if e.status == 400:
        return SourceError(f"{who} rejected {what} (400){said}: fix the query (the backend's words are quoted)")
    if e.status == 401:
        if "org id" in e.excerpt.lower():
            return SourceError(
                f"{who} refused {what} (401){said}: it runs multi-tenant; set the tenant header, e.g. "
                'headers = {"X-Scope-OrgID" = "<tenant>"} in this backend\'s [[backends]] table'
            )
        return SourceError(
            f"{who} refused {what} (401){said}: check the credentials configured for it (token, token_file, "
            "or username/password)"
        )
    if e.status == 403:
        return SourceError(
            f"{who} refused {what} (403){said}: the configured credentials (or tenant) lack permission to read it"
        )
    if e.status == 404:
        return SourceError(
            not_found
            or f"{who} has no {what} (404){said}: check url (including any path prefix such as /loki or /tempo)"
        )
    return SourceError(f"{who} failed {what}: {e.message}")
