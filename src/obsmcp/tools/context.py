"""What every tool needs: the store, the settings, the service resolver and the token budget."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from obsmcp.config import Settings
from obsmcp.resolve import ServiceNotFoundError, resolve_service
from obsmcp.sources.registry import SourceRegistry
from obsmcp.store.database import Store
from obsmcp.store.dialect import Dialect
from obsmcp.timerange import TimeRange

SEVERITY_FLOOR = {"trace": 1, "debug": 5, "info": 9, "warn": 13, "warning": 13, "error": 17, "fatal": 21}


class ToolInputError(ValueError):
    """The caller's arguments are wrong; the message says how to fix them."""


def severity_floor(min_severity: str | None) -> int | None:
    if min_severity is None or not str(min_severity).strip():
        return None
    s = str(min_severity).strip().lower()
    if s.isdigit() and 1 <= int(s) <= 24:
        return int(s)
    if s in SEVERITY_FLOOR:
        return SEVERITY_FLOOR[s]
    raise ToolInputError(
        f"min_severity={min_severity!r} is not a severity: use trace, debug, info, warn, error or fatal"
    )


@dataclass
class ToolContext:
    db: Store
    settings: Settings
    _services_cache: dict[str, Any] = field(default_factory=dict)
    # The remote backends (settings.backends) as sources; built here so bad configuration fails at start.
    sources: SourceRegistry = field(default_factory=SourceRegistry)

    def __post_init__(self) -> None:
        if not self.sources and self.settings.backends:
            self.sources = SourceRegistry.from_settings(self.settings)

    @property
    def dialect(self) -> Dialect:
        return self.db.dialect

    def budget(self, max_tokens: int | None = None) -> int:
        want = max_tokens or self.settings.default_result_tokens
        return max(100, min(want, self.settings.max_result_tokens))

    def known_services(self, tr: TimeRange | None = None) -> list[str]:
        """Services seen in any signal (cached briefly; the set changes slowly)."""
        cached = self._services_cache.get("all")
        if cached and time.monotonic() - cached[0] < 15:
            return list(cached[1])
        _, rows = self.db.query(
            'SELECT DISTINCT "ServiceName" FROM otel_traces UNION SELECT DISTINCT "ServiceName" FROM otel_logs '
            + " ".join(
                f'UNION SELECT DISTINCT "ServiceName" FROM {t}'
                for t in (
                    "otel_metrics_gauge",
                    "otel_metrics_sum",
                    "otel_metrics_histogram",
                    "otel_metrics_exponential_histogram",
                    "otel_metrics_summary",
                )
            )
        )
        names = sorted({str(r[0]) for r in rows if r[0]})
        self._services_cache["all"] = (time.monotonic(), names)
        return names

    def resolve(self, service: str | None) -> str | None:
        if service is None or not service.strip():
            return None
        return resolve_service(service, self.known_services())

    def resolve_fresh(self, service: str | None) -> str | None:
        """`resolve`, asking the store again when the cached service list does not know the name (a service
        that appeared within the cache's 15 s: a status page click, an alert rule)."""
        try:
            return self.resolve(service)
        except ServiceNotFoundError:
            self._services_cache.clear()
            return self.resolve(service)
