"""One Settings object: command-line flags > OBSMCP_* environment variables > obsmcp.toml > defaults."""

from __future__ import annotations

import json
import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import platformdirs
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from obsmcp.alerting.model import AlertRule, duration_s
from obsmcp.alerting.notify import WebhookConfig
from obsmcp.fleet.model import FleetPaths, FleetSettings
from obsmcp.sources.config import BackendConfig, backends_from_env

# Which variable made an environment-derived backend, for messages about it.
_ENV_ORIGIN = {
    "prometheus": "PROMETHEUS_URL",
    "loki": "LOKI_URL",
    "tempo": "TEMPO_URL",
    "jaeger": "JAEGER_ENDPOINT",
    "sentry": "SENTRY_AUTH_TOKEN/SENTRY_ORG",
    "datadog": "DATADOG_API_KEY/DATADOG_APP_KEY",
}


class ConfigError(ValueError):
    """Configuration is invalid; the message names the key and the fix."""


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("obsmcp", appauthor=False))


# -- SLOs as code ---------------------------------------------------------------------------------------------

SLI_KINDS = ("availability", "latency", "error_rate")
_WINDOW = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(m|h|d|w)\s*$", re.IGNORECASE)
_WINDOW_S = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class SLOConfig(BaseModel):
    """One service level objective, as written in the config file's `[[slos]]` tables.

    availability: share of requests (entry spans: server spans or roots) that did not fail on the server
    (span status Error or HTTP status >= 500); latency: share of requests faster than `threshold_ms`;
    error_rate: share of all the service's spans (server, client, internal, messaging) without error status,
    so failing downstream calls count even when the request itself recovered.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, description="unique name, e.g. checkout-availability")
    service: str = Field(min_length=1, description="service.name the SLO applies to")
    sli: Literal["availability", "latency", "error_rate"] = Field(description="what counts as a good event")
    objective: float = Field(description="percent of good events, e.g. 99.9 (above 0, below 100)")
    window: str = Field("30d", description="compliance window, e.g. 30d, 28d, 7d")
    threshold_ms: float | None = Field(None, gt=0, description="latency: a request is good when at most this long")
    operation: str | None = Field(None, description="only entry spans with this span name, e.g. 'POST /checkout'")
    source: Literal["spans", "metric"] = Field("spans", description="spans (entry spans) or metric")
    metric: str | None = Field(None, description="source=metric: histogram (latency) or counter name")
    good_metric: str | None = Field(None, description="source=metric: counter of good events")
    total_metric: str | None = Field(None, description="source=metric: counter of all events")
    backend: str | None = Field(
        None, description="a Prometheus backend's name: count requests from its standard HTTP server histogram"
    )

    @field_validator("objective")
    @classmethod
    def _objective(cls, v: float) -> float:
        if not 0 < v < 100:
            raise ValueError(f"{v:g} is not a percentage of good events: use a value above 0 and below 100, e.g. 99.9")
        return v

    @field_validator("window")
    @classmethod
    def _window(cls, v: str) -> str:
        m = _WINDOW.match(v)
        if not m or float(m.group(1)) <= 0:
            raise ValueError(f"{v!r} is not a window: write a number and a unit (m, h, d, w), e.g. '30d'")
        return v.strip()

    @model_validator(mode="after")
    def _consistent(self) -> SLOConfig:
        if self.sli == "latency" and self.threshold_ms is None:
            raise ValueError("threshold_ms is required when sli = 'latency' (a request is good when faster)")
        if self.sli != "latency" and self.threshold_ms is not None:
            raise ValueError(f"threshold_ms applies to sli = 'latency' only; remove it for sli = {self.sli!r}")
        if self.source == "metric":
            pair = self.good_metric is not None, self.total_metric is not None
            if pair[0] != pair[1]:
                raise ValueError("good_metric and total_metric go together: give both counters, or metric=")
            if self.metric is None and not all(pair):
                raise ValueError(
                    "source = 'metric' needs metric = '<histogram>' (e.g. http.server.request.duration) "
                    "or good_metric and total_metric (counters)"
                )
            if self.metric is not None and all(pair):
                raise ValueError("give either metric or good_metric/total_metric, not both")
            if self.metric is not None and self.sli == "error_rate":
                raise ValueError(
                    "a histogram metric gives latency or availability (HTTP status >= 500 is bad); for "
                    "error_rate give good_metric and total_metric (counters)"
                )
            if self.operation is not None:
                raise ValueError("operation filters entry spans: it needs source = 'spans'")
        elif self.metric or self.good_metric or self.total_metric:
            raise ValueError("metric/good_metric/total_metric need source = 'metric'")
        if self.backend is not None:
            # Prometheus' HTTP server histogram says whether a request failed (5xx) and how long it took:
            # nothing else, and not per operation.
            if self.sli == "error_rate":
                raise ValueError(
                    "field 'backend': a Prometheus HTTP server histogram gives availability or latency, not "
                    "error_rate: use sli = 'availability', or remove backend to count spans"
                )
            if self.source == "metric":
                raise ValueError(
                    "field 'backend': source = 'metric' counts obsmcp's own store; remove source/metric to count "
                    "from the backend, or remove backend"
                )
            if self.operation is not None:
                raise ValueError(
                    "field 'backend': operation filters spans, which a Prometheus histogram has not: remove "
                    "operation, or remove backend to count spans"
                )
        return self

    @property
    def window_s(self) -> float:
        m = _WINDOW.match(self.window)
        assert m is not None  # validated above
        return float(m.group(1)) * _WINDOW_S[m.group(2).lower()]

    @property
    def target(self) -> float:
        """The objective as a fraction (99.9 -> 0.999)."""
        return self.objective / 100.0


def default_slos(service: str) -> list[SLOConfig]:
    """The SLOs a service gets when the config defines none for it (issue 7): availability 99.9%,
    p95 < 2 s (95% of requests faster than 2 s), p99 < 5 s, error rate < 0.1%, over 30 days."""
    return [
        SLOConfig(name="availability", service=service, sli="availability", objective=99.9),
        SLOConfig(name="latency-p95", service=service, sli="latency", objective=95.0, threshold_ms=2000.0),
        SLOConfig(name="latency-p99", service=service, sli="latency", objective=99.0, threshold_ms=5000.0),
        SLOConfig(name="error-rate", service=service, sli="error_rate", objective=99.9),
    ]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OBSMCP_", extra="forbid", validate_default=True)

    host: str = Field("127.0.0.1", description="address the HTTP servers bind to")
    port: int = Field(8000, ge=0, le=65535, description="MCP streamable HTTP port (MCP at /mcp)")
    otlp_port: int = Field(4318, ge=0, le=65535, description="OTLP/HTTP receiver port; 0 disables it")
    otlp_grpc_port: int = Field(0, ge=0, le=65535, description="OTLP/gRPC receiver port (4317); 0 disables it")
    data_dir: Path = Field(default_factory=default_data_dir, description="where the DuckDB store lives")
    stateless_http: bool = Field(False, description="serve MCP over HTTP without sessions (for replicas)")
    store: SecretStr | None = Field(
        None,
        description="the store: empty for the embedded DuckDB in data_dir, clickhouse://USER:PASS@HOST:8123/DB "
        "(an OpenTelemetry Collector clickhouseexporter database; clickhouses:// for HTTPS), or chdb:///DIR",
    )

    @field_validator("store")
    @classmethod
    def _store_url(cls, v: SecretStr | None) -> SecretStr | None:
        # A bad URL fails when the settings load, naming the key, not at the first query.
        if v is not None and v.get_secret_value().strip():
            from obsmcp.store.url import parse_store_url

            parse_store_url(v.get_secret_value())
        return v

    retention_days: float = Field(7.0, gt=0, description="delete telemetry older than this")
    retention_max_gb: float = Field(10.0, gt=0, description="delete the oldest telemetry above this size")

    max_result_tokens: int = Field(8000, ge=200, description="hard cap on one tool answer, in tokens")
    default_result_tokens: int = Field(2000, ge=100, description="default budget of one tool answer")

    otlp_max_body_bytes: int = Field(64 * 1024 * 1024, ge=1024, description="OTLP body cap after gunzip")
    ingest_queue_max_rows: int = Field(500_000, ge=1000, description="rows waiting to be written before 503")
    # One DuckDB row group: inserts that fill one are written straight to the file instead of via the WAL
    # (measured: 107k spans/s against 62k at 50k-row batches).
    ingest_batch_rows: int = Field(122_880, ge=100, description="rows per group commit")
    ingest_flush_ms: int = Field(250, ge=1, description="longest wait before a partial batch is committed")
    ingest_decode_processes: int = Field(
        default_factory=lambda: min(4, os.cpu_count() or 1),
        ge=0,
        description="worker processes decoding OTLP (0: decode in the server process)",
    )
    ingest_memory_max_mb: float = Field(
        256.0,
        ge=1,
        description="bytes of OTLP requests in progress (bodies, gunzipped bodies, decoded rows waiting for their "
        "commit), in MB; a request that does not fit is answered 429 with Retry-After",
    )

    query_timeout_s: float = Field(30.0, gt=0, description="timeout for one query against the store")
    exact_count_max_rows: int = Field(
        1_000_000, ge=1000, description="above this many records in range, search_logs estimates its counts"
    )
    sql_max_rows: int = Field(500, ge=1, description="row cap of query_sql")
    redact_secrets: bool = Field(
        True,
        description="redact secrets (keys, tokens, passwords, JWTs, private keys, card numbers) in telemetry "
        "text before it leaves the server",
    )
    redact_disabled_kinds: list[str] = Field(
        default_factory=list,
        description="secret detectors to turn off, e.g. ['card'] (kinds: obsmcp.redaction.KINDS)",
    )
    redact_patterns: list[str] = Field(
        default_factory=list,
        description="extra regular expressions (Python syntax) to redact; a group named 'secret' limits the "
        "redaction to that group, e.g. 'acct-key=(?P<secret>\\w+)'",
    )

    # Building a redactor here makes a bad kind or regex stop the server at start, not at first use.
    @field_validator("redact_disabled_kinds")
    @classmethod
    def _redact_kinds(cls, v: list[str]) -> list[str]:
        from obsmcp.redaction import Redactor

        Redactor(disabled=v)
        return v

    @field_validator("redact_patterns")
    @classmethod
    def _redact_patterns(cls, v: list[str]) -> list[str]:
        from obsmcp.redaction import Redactor

        Redactor(patterns=v)
        return v

    slos: list[SLOConfig] = Field(
        default_factory=list,
        description="SLOs as code ([[slos]] tables, or JSON in OBSMCP_SLOS); services without any get defaults",
    )

    fleet: FleetSettings = Field(
        default_factory=FleetSettings,
        description="`obsmcp fleet`: registries, schedules, retention ([fleet] table, or JSON in OBSMCP_FLEET)",
    )

    backends: list[BackendConfig] = Field(
        default_factory=list,
        description="remote backends ([[backends]] tables, or JSON in OBSMCP_BACKENDS), plus those named by "
        "PROMETHEUS_URL, LOKI_URL, SENTRY_AUTH_TOKEN, DATADOG_API_KEY, ... in the environment",
    )

    @field_validator("backends", mode="before")
    @classmethod
    def _backends(cls, v: Any) -> Any:
        """Validate each backend alone so the error names the backend and its field; add the ones the
        environment names (obsmcp.sources.config.backends_from_env); a name given twice is an error."""
        if not isinstance(v, list):
            return v
        entries: list[tuple[str, Any]] = [(f"[[backends]] #{i + 1}", item) for i, item in enumerate(v)]
        entries += [(f"the {_ENV_ORIGIN[str(e['kind'])]} environment variable", e) for e in backends_from_env()]
        out: list[BackendConfig] = []
        origin: dict[str, str] = {}
        for where, item in entries:
            name = (
                item.name if isinstance(item, BackendConfig) else item.get("name") if isinstance(item, dict) else None
            )
            label = f"backend {name!r} ({where})" if name else f"backend {where} (no name)"
            try:
                backend = item if isinstance(item, BackendConfig) else BackendConfig.model_validate(item)
            except ValidationError as e:
                raise ValueError(f"{label}: {_explain_model(e, BackendConfig)}") from None
            if backend.name in origin:
                raise ValueError(
                    f"backend name {backend.name!r} is given twice, by {origin[backend.name]} and by {where}: "
                    "give each backend its own name (name = ...), or drop one"
                )
            origin[backend.name] = where
            out.append(backend)
        return out

    slo_alert_min_bad_events: int = Field(
        10,
        ge=0,
        description="a burn-rate alert needs this many bad events in its long window (low-traffic guard)",
    )

    # -- alerting (obsmcp.alerting) ---------------------------------------------------------------------------
    alerts: list[AlertRule] = Field(
        default_factory=list,
        description="alert rules as code ([[alerts]] tables, or JSON in OBSMCP_ALERTS); see obsmcp.alerting.model",
    )
    alert_interval: str = Field("30s", description="how often `obsmcp serve` evaluates the alert rules, e.g. '30s'")
    alert_default_rules: bool = Field(
        True, description="burn-rate alert rules over every SLO (configured, and the defaults of every service seen)"
    )

    @field_validator("alerts", mode="before")
    @classmethod
    def _alerts(cls, v: Any) -> Any:
        """Validate each rule alone so the error names the rule and its field; names are unique."""
        return _named_items(v, AlertRule, "alert rule")

    @field_validator("alert_interval")
    @classmethod
    def _alert_interval(cls, v: str) -> str:
        if duration_s(v) < 1:
            raise ValueError(f"{v!r} is too short: evaluate at most once a second, e.g. '30s'")
        return v.strip()

    @model_validator(mode="after")
    def _alert_rules_evaluate(self) -> Settings:
        """Every configured rule can evaluate: its SLO exists, its backend is configured and of the right kind."""
        from obsmcp.alerting.rules import RuleError, check_rules

        try:
            check_rules(self.alerts, self)
        except RuleError as e:
            raise ValueError(f"alerts (the config file's [[alerts]] tables or OBSMCP_ALERTS as JSON): {e}") from None
        return self

    alert_webhooks: list[WebhookConfig] = Field(
        default_factory=list,
        description="where alert notifications go ([[alert_webhooks]] tables, or JSON in OBSMCP_ALERT_WEBHOOKS)",
    )

    @field_validator("alert_webhooks", mode="before")
    @classmethod
    def _alert_webhooks(cls, v: Any) -> Any:
        """Validate each webhook alone so the error names it and its field (never its URL: a secret)."""
        return _named_items(v, WebhookConfig, "webhook")

    # -- access control (obsmcp.auth, obsmcp.access) ---------------------------------------------------------
    auth_token: SecretStr | None = Field(
        None, description='a static bearer token, or "name:token" (the name identifies the caller in the audit log)'
    )
    auth_token_file: Path | None = Field(
        None, description='file of static bearer tokens, one per line, "token" or "name:token"; # comments'
    )
    auth_jwks_url: str | None = Field(None, description="OAuth 2.1: JWKS URL of the authorization server")
    auth_issuer: str | None = Field(None, description="OAuth 2.1: the exact `iss` of accepted JWTs")
    auth_audience: str | None = Field(
        None, description="OAuth 2.1: the `aud` JWTs must carry (default: the resource URL)"
    )
    auth_required_scopes: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="OAuth 2.1: scopes every token needs (comma-separated)"
    )
    auth_resource_url: str | None = Field(
        None, description="public URL of the MCP endpoint, e.g. https://obsmcp.example.com/mcp (RFC 9728 resource)"
    )
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description='Host header values accepted besides loopback ("name", "name:port", "name:*")'
    )
    allowed_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description='Origin header values accepted ("https://app.example.com", "http://x:*")'
    )
    enable_writes: bool = Field(False, description="serve tools that change something (readOnlyHint false)")
    # Grafana, where push_dashboard sends generated dashboards (obsmcp.dashboards.grafana).
    grafana_url: str | None = Field(None, description="Grafana base URL, e.g. http://grafana:3000")
    grafana_token: SecretStr | None = Field(None, description="Grafana service account token (never logged)")
    grafana_folder: str = Field("obsmcp", min_length=1, description="Grafana folder title for pushed dashboards")
    tools: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description='tool names or categories to serve, "default" or "all" (empty: default)'
    )
    disable_tools: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="tool names or categories not to serve"
    )
    rate_limit_per_client: float = Field(
        10.0, ge=0, description="tool calls per second per client over HTTP (token or address); 0 disables"
    )
    rate_limit_burst: int = Field(40, ge=1, description="tool calls a client may make at once above the rate")
    mcp_max_body_bytes: int = Field(1024 * 1024, ge=1024, description="cap on one MCP HTTP request body (413)")
    audit_log: str = Field(
        "auto", description='JSON-lines log of tool calls over HTTP: "auto" (<data_dir>/audit.jsonl), "off", or a path'
    )
    audit_log_max_bytes: int = Field(
        64 * 1024 * 1024, ge=4096, description="the audit log rotates to <file>.1 above this size (one kept)"
    )

    @field_validator(
        "auth_required_scopes", "allowed_hosts", "allowed_origins", "tools", "disable_tools", mode="before"
    )
    @classmethod
    def _comma_list(cls, v: Any) -> Any:
        """Lists come as TOML arrays, JSON arrays, or comma-separated strings (flags and environment)."""
        if isinstance(v, str):
            text = v.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return v

    # -- self-observability (/health thresholds, self-ingest) ------------------------------------------------
    health_queue_warn_share: float = Field(
        0.8, gt=0, le=1, description="/health is degraded when the ingest queue holds this share of its limit"
    )
    health_error_rate: float = Field(
        0.25,
        ge=0,
        le=1,
        description="/health is degraded when more than this share of recent tool calls failed on the server side",
    )
    health_error_window_s: float = Field(
        300.0, ge=10, le=3600, description="the window of recent tool calls behind health_error_rate, seconds"
    )
    health_error_min_calls: int = Field(
        5, ge=1, description="fewer tool calls than this in the window never make /health degraded"
    )
    self_ingest: bool = Field(
        False, description="store obsmcp's own traces and logs in its own store (service.name obsmcp)"
    )

    @field_validator("slos", mode="before")
    @classmethod
    def _slos(cls, v: Any) -> Any:
        """Validate each SLO alone so the error names the SLO and its field, not a list index."""
        return _named_items(v, SLOConfig, "SLO")

    @model_validator(mode="after")
    def _slo_backends(self) -> Settings:
        """An SLO's backend names a configured Prometheus backend (checked at start, not at the first report)."""
        kinds = {b.name: b.kind for b in self.backends}
        for slo in self.slos:
            if slo.backend is None:
                continue
            if slo.backend not in kinds:
                named = ", ".join(n for n, k in kinds.items() if k == "prometheus") or "none"
                raise ValueError(
                    f"slos: SLO {slo.name!r}: backend = {slo.backend!r} names no configured backend (Prometheus "
                    f"backends: {named}): fix the name, add a [[backends]] table with name = {slo.backend!r} and "
                    "kind = 'prometheus', or remove backend to count spans"
                )
            if kinds[slo.backend] != "prometheus":
                raise ValueError(
                    f"slos: SLO {slo.name!r}: backend = {slo.backend!r} is a {kinds[slo.backend]} backend; SLOs are "
                    "counted from a Prometheus HTTP server histogram: name a kind = 'prometheus' backend, or remove "
                    "backend to count spans"
                )
        return self

    @field_validator("data_dir", mode="before")
    @classmethod
    def _expand(cls, v: Any) -> Any:
        return Path(v).expanduser() if isinstance(v, str | Path) else v

    @property
    def store_path(self) -> Path:
        return self.data_dir / "obsmcp.duckdb"

    @property
    def fleet_paths(self) -> FleetPaths:
        return FleetPaths((self.fleet.dir or self.data_dir / "fleet").expanduser())


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build Settings: explicit overrides (flags) > OBSMCP_* environment > TOML file > defaults.

    Raises ConfigError naming the offending key and what to do.
    """
    if config_file is not None:
        path = Path(config_file).expanduser()
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist: check the --config path or OBSMCP_CONFIG")
        try:
            tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
    clean = {k: v for k, v in overrides.items() if v is not None}
    try:
        return _settings_class(config_file)(**clean)
    except ValidationError as e:
        raise ConfigError(_explain(e)) from None


def _settings_class(config_file: Path | None) -> type[Settings]:
    if config_file is None:
        return Settings

    class FileSettings(Settings):
        model_config = SettingsConfigDict(**{**Settings.model_config, "toml_file": config_file})

        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))

    return FileSettings


_Named = TypeVar("_Named", bound=BaseModel)


def _named_items(v: Any, model: type[_Named], what: str) -> Any:
    """A config list of named tables (SLOs, alert rules, webhooks), each validated alone so an error names the
    item and its field rather than a list index; names must be unique. Not a list: left to pydantic."""
    if not isinstance(v, list):
        return v
    out: list[_Named] = []
    for i, item in enumerate(v):
        if isinstance(item, model):
            out.append(item)
            continue
        name = item.get("name") if isinstance(item, dict) else None
        label = f"{what} {name!r}" if name else f"{what} #{i + 1} (no name)"
        try:
            out.append(model.model_validate(item))
        except ValidationError as e:
            raise ValueError(f"{label}: {_explain_model(e, model)}") from None
    names = [getattr(item, "name", None) for item in out]
    dup = sorted({str(n) for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"{what} names must be unique: {', '.join(dup)} appear more than once")
    return out


def _explain_model(err: ValidationError, model: type[BaseModel]) -> str:
    parts = []
    for e in err.errors():
        field = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            parts.append(f"unknown field {field!r} (valid fields: {', '.join(model.model_fields)})")
        elif e["type"] == "missing":
            parts.append(f"field {field!r} is required")
        else:
            msg = str(e["msg"]).removeprefix("Value error, ")
            parts.append(f"field {field!r}: {msg}" if field else msg)
    return "; ".join(parts)


def _explain(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(settings)"
        if not e["loc"]:
            # A check across settings (Settings model validators): the message names the keys and the fix.
            parts.append(str(e["msg"]).removeprefix("Value error, "))
            continue
        if key == "slos":
            # The SLO validator's message already names the SLO and its field.
            msg = str(e["msg"]).removeprefix("Value error, ")
            parts.append(f"slos (the config file's [[slos]] tables or OBSMCP_SLOS as JSON): {msg}")
            continue
        if key == "alert_webhooks":
            msg = str(e["msg"]).removeprefix("Value error, ")
            parts.append(f"alert_webhooks ([[alert_webhooks]] tables or OBSMCP_ALERT_WEBHOOKS as JSON): {msg}")
            continue
        if key == "alerts":
            msg = str(e["msg"]).removeprefix("Value error, ")
            parts.append(f"alerts (the config file's [[alerts]] tables or OBSMCP_ALERTS as JSON): {msg}")
            continue
        if key == "backends":
            msg = str(e["msg"]).removeprefix("Value error, ")
            parts.append(f"backends (the config file's [[backends]] tables or OBSMCP_BACKENDS as JSON): {msg}")
            continue
        env = f"OBSMCP_{key.upper()}"
        if e["type"] == "extra_forbidden":
            parts.append(f"unknown setting {key!r}: remove it (valid keys: {', '.join(Settings.model_fields)})")
        else:
            parts.append(f"{key} (flag --{key.replace('_', '-')} or {env}): {e['msg']}")
    return "invalid configuration: " + "; ".join(parts)
