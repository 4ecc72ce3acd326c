"""Remote backends as configuration: `[[backends]]` tables in obsmcp.toml, or the environment variables users
already have for each tool (PROMETHEUS_URL, LOKI_URL, SENTRY_AUTH_TOKEN, DATADOG_API_KEY, ...).

Several instances of one kind are normal (prod and staging Prometheus, two Sentry orgs): each backend has its
own name, which is what a tool's `backend` argument, `backend_status` and the metrics' `backend` label use.
Secrets (tokens, API keys, passwords) may be given inline, or as a file path (`token_file`, or `<VAR>_FILE` in
the environment, as Docker and Kubernetes secrets are mounted); they are `SecretStr`, so they never print.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

Kind = Literal["prometheus", "loki", "tempo", "jaeger", "sentry", "datadog"]
Signal = Literal["logs", "traces", "metrics", "errors"]

SIGNALS_BY_KIND: dict[str, tuple[str, ...]] = {
    "prometheus": ("metrics",),
    "loki": ("logs",),
    "tempo": ("traces",),
    "jaeger": ("traces",),
    "sentry": ("errors",),
    "datadog": ("logs", "traces", "metrics"),
}
DATADOG_SITES = ("datadoghq.com", "us3.datadoghq.com", "us5.datadoghq.com", "datadoghq.eu", "ap1.datadoghq.com",
                 "ap2.datadoghq.com", "ddog-gov.com")  # fmt: skip
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")


class BackendConfig(BaseModel):
    """One remote backend instance."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="instance name, e.g. prometheus-prod (lowercase letters, digits, - _ .)")
    kind: Kind = Field(description="prometheus | loki | tempo | jaeger | sentry | datadog")
    url: str | None = Field(None, description="base URL (Datadog: derived from site when absent)")
    signals: tuple[Signal, ...] | None = Field(None, description="signals to route here (default: all it serves)")
    # Credentials: inline or from a file; never printed.
    token: SecretStr | None = Field(None, description="bearer token (Prometheus/Loki/Tempo/Jaeger, Sentry)")
    token_file: Path | None = Field(None, description="file holding the bearer token")
    username: str | None = Field(None, description="basic auth user")
    password: SecretStr | None = Field(None, description="basic auth password")
    headers: dict[str, str] = Field(default_factory=dict, description="extra headers, e.g. X-Scope-OrgID")
    # Vendor specifics.
    org: str | None = Field(None, description="Sentry organization slug")
    environment: str | None = Field(None, description="Sentry environment filter (optional; none by default)")
    site: str | None = Field(None, description="Datadog site, e.g. datadoghq.eu (DD_SITE)")
    api_key: SecretStr | None = Field(None, description="Datadog API key")
    app_key: SecretStr | None = Field(None, description="Datadog application key")
    jaeger_api: Literal["v1", "v3"] = Field("v1", description="Jaeger v1 HTTP API (/api) or v2's API v3 (/api/v3)")
    # Remote-call policy (DESIGN.md "Remote calls").
    connect_timeout_s: float = Field(5.0, gt=0, le=120)
    read_timeout_s: float = Field(30.0, gt=0, le=600)
    rate_limit_per_s: float = Field(20.0, ge=0, description="token bucket per backend; 0 disables")
    query_cache_ttl_s: float = Field(15.0, ge=0, description="TTL of cached query results; 0 disables")
    metadata_cache_ttl_s: float = Field(300.0, ge=0, description="TTL of metric names, labels, projects")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"{v!r} is not a backend name: use lowercase letters, digits, '-', '_' or '.'")
        return v

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is None:
            return None
        parts = urlsplit(v.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"{v!r} is not an http(s) URL: write it like http://host:9090")
        if parts.password:
            raise ValueError("put the password in `password` (or a token file), not in the URL")
        return v.strip().rstrip("/")

    @field_validator("site")
    @classmethod
    def _site(cls, v: str | None) -> str | None:
        if v is not None and v not in DATADOG_SITES:
            raise ValueError(f"{v!r} is not a Datadog site: use one of {', '.join(DATADOG_SITES)}")
        return v

    @model_validator(mode="after")
    def _complete(self) -> BackendConfig:
        if self.kind == "datadog":
            if self.api_key is None or self.app_key is None:
                raise ValueError("Datadog needs api_key and app_key (DATADOG_API_KEY and DATADOG_APP_KEY)")
        elif self.url is None and self.kind != "sentry":
            raise ValueError(f"{self.kind} needs url (e.g. {_EXAMPLE_URL[self.kind]})")
        if self.kind == "sentry":
            if self.org is None:
                raise ValueError("Sentry needs org (the organization slug; SENTRY_ORG)")
            if self.token is None and self.token_file is None:
                raise ValueError("Sentry needs an auth token (SENTRY_AUTH_TOKEN, or token_file)")
        if self.token is not None and self.token_file is not None:
            raise ValueError("give token or token_file, not both")
        if self.token_file is not None and not self.token_file.expanduser().is_file():
            raise ValueError(f"token_file {self.token_file} does not exist: check the path")
        if self.signals is not None:
            served = SIGNALS_BY_KIND[self.kind]
            extra = [s for s in self.signals if s not in served]
            if extra:
                raise ValueError(f"{self.kind} does not serve {', '.join(extra)} (it serves {', '.join(served)})")
        return self

    @property
    def routed_signals(self) -> tuple[str, ...]:
        return tuple(self.signals) if self.signals is not None else SIGNALS_BY_KIND[self.kind]

    @property
    def base_url(self) -> str:
        if self.url:
            return self.url
        if self.kind == "datadog":
            return f"https://api.{self.site or 'datadoghq.com'}"
        return "https://sentry.io"

    def bearer(self) -> str | None:
        """The bearer token, read from its file each time (rotated secrets take effect without a restart)."""
        if self.token is not None:
            return self.token.get_secret_value()
        if self.token_file is not None:
            return self.token_file.expanduser().read_text().strip()
        return None


_EXAMPLE_URL = {
    "prometheus": "http://localhost:9090",
    "loki": "http://localhost:3100",
    "tempo": "http://localhost:3200",
    "jaeger": "http://localhost:16686",
    "sentry": "https://sentry.io",
    "datadog": "https://api.datadoghq.com",
}


def _env(environ: Mapping[str, str], name: str) -> str | None:
    """A variable's value, or the contents of the file named by <name>_FILE."""
    v = environ.get(name)
    if v:
        return v.strip()
    path = environ.get(f"{name}_FILE")
    if path:
        p = Path(path).expanduser()
        if not p.is_file():
            raise ValueError(f"{name}_FILE={path} does not exist: point it at the file that holds {name}")
        return p.read_text().strip()
    return None


def backends_from_env(environ: Mapping[str, str] | None = None) -> list[dict[str, object]]:
    """Backend tables from the environment variable names each vendor's own tools use."""
    env = os.environ if environ is None else environ
    out: list[dict[str, object]] = []
    prom = _env(env, "PROMETHEUS_URL") or _env(env, "PROMETHEUS_ENDPOINT")
    if prom:
        out.append({"name": "prometheus", "kind": "prometheus", "url": prom})
    for var, kind in (("LOKI_URL", "loki"), ("TEMPO_URL", "tempo"), ("JAEGER_ENDPOINT", "jaeger")):
        url = _env(env, var)
        if url:
            out.append({"name": kind, "kind": kind, "url": url})
    sentry_token = _env(env, "SENTRY_AUTH_TOKEN")
    if sentry_token or env.get("SENTRY_ORG"):
        entry: dict[str, object] = {
            "name": "sentry",
            "kind": "sentry",
            "token": sentry_token,
            "org": env.get("SENTRY_ORG"),
        }
        if env.get("SENTRY_URL"):
            entry["url"] = env["SENTRY_URL"]
        out.append(entry)
    dd_api, dd_app = (
        _env(env, "DATADOG_API_KEY") or _env(env, "DD_API_KEY"),
        (_env(env, "DATADOG_APP_KEY") or _env(env, "DD_APP_KEY") or _env(env, "DD_APPLICATION_KEY")),
    )
    if dd_api or dd_app:
        entry = {"name": "datadog", "kind": "datadog", "api_key": dd_api, "app_key": dd_app}
        if env.get("DD_SITE"):
            entry["site"] = env["DD_SITE"]
        out.append(entry)
    return out
