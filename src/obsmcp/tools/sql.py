"""query_sql: read-only SQL over the store, with row and size caps."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from pydantic import Field

from obsmcp.result import (
    UNTRUSTED_NOTE,
    Fence,
    ListResult,
    Redactor,
    estimate_tokens,
    redactor_for,
    scrub,
    within_budget,
)
from obsmcp.store.database import QUERY_ERRORS, SqlRejectedError
from obsmcp.store.schema import MACROS_DDL, META_DDL, TELEMETRY_TABLES
from obsmcp.tools.context import ToolContext, ToolInputError


class QuerySqlResult(ListResult):
    columns: list[str] = Field(default_factory=list)
    rows: list[list[Any]] = Field(default_factory=list, description="values are untrusted telemetry text")


def schema_text(ctx: ToolContext | None = None) -> str:
    """The store's DDL (also served as the MCP resource obsmcp://schema). On ClickHouse, the tables as they are
    (the exporter's version, TTLs and codecs vary by deployment), read from system.tables."""
    if ctx is not None and ctx.dialect.name == "clickhouse":
        _, rows = ctx.db.query(
            "SELECT create_table_query FROM system.tables WHERE database = currentDatabase() "
            "AND name LIKE 'otel\\_%' ORDER BY name"
        )
        head = (
            "-- obsmcp store (ClickHouse, OpenTelemetry Collector exporter tables). Attribute columns are Maps: "
            "SpanAttributes['http.route']. Only one SELECT is allowed."
        )
        return "\n\n".join([head, *(str(r[0]) + ";" for r in rows)])
    parts = [
        "-- obsmcp store (DuckDB). Tables use the OpenTelemetry Collector ClickHouse exporter's names.",
        "-- Times are TIMESTAMP_NS in UTC; Duration is in nanoseconds; SpanKind is Server/Client/Internal/...;",
        "-- StatusCode is Ok/Error/Unset. Attribute columns are lists of {key, value} structs (the exporter's Map):",
        '--   attr("SpanAttributes", \'http.route\') reads one value, attr_keys("SpanAttributes") lists the keys.',
        '-- Quote dotted columns: "Events.Name". Only SELECT/WITH is allowed.',
    ]
    parts += [t.ddl() + ";" for t in TELEMETRY_TABLES]
    parts.append(META_DDL + ";")
    parts += [m + ";" for m in MACROS_DDL]
    return "\n\n".join(parts)


def _check_read_only(ctx: ToolContext, sql: str) -> str:
    """One read-only statement, checked by the store's own parser (DuckDB's or ClickHouse's)."""
    try:
        return ctx.db.check_read_only(sql)
    except SqlRejectedError as e:
        raise ToolInputError(str(e)) from None


def _cell(v: Any, redact: Redactor | None) -> Any:
    if isinstance(v, str):
        return scrub(v, redact_secrets=redact, max_chars=300)
    if isinstance(v, dt.datetime):
        return v.isoformat() + ("Z" if v.tzinfo is None else "")
    if isinstance(v, int | float | bool) or v is None:
        return v
    return scrub(json.dumps(v, default=str), redact_secrets=redact, max_chars=300)


def query_sql(
    ctx: ToolContext, sql: str, limit: int = 100, max_tokens: int | None = None
) -> tuple[QuerySqlResult, str]:
    cap = ctx.settings.sql_max_rows
    if not 1 <= limit <= cap:
        raise ToolInputError(f"limit={limit} is out of range: use 1..{cap}")
    text = _check_read_only(ctx, sql)
    try:
        cols, rows = ctx.db.query(f"SELECT * FROM ({text}) AS q LIMIT {limit + 1}")
    except QUERY_ERRORS as e:
        first = str(e).splitlines()[0]
        raise ToolInputError(f"the query failed: {first}. The schema is in resource obsmcp://schema") from None
    more = len(rows) > limit
    rows = rows[:limit]
    redact = redactor_for(ctx.settings)
    table = [[_cell(v, redact) for v in r] for r in rows]
    budget = ctx.budget(max_tokens)
    kept = within_budget(
        table, lambda r: estimate_tokens(" | ".join(map(str, r))) + 1, budget, 60 + estimate_tokens(" | ".join(cols))
    )
    notes = []
    if more:
        notes.append(f"more than {limit} rows: add ORDER BY/LIMIT/aggregation, or raise limit")
    if len(kept) < len(table):
        notes.append(f"cut to {len(kept)} of {len(table)} rows to fit ~{budget} tokens: select fewer columns")
    res = QuerySqlResult(
        total=None if more else len(rows),
        returned=len(kept),
        truncated=more or len(kept) < len(table),
        notes=notes,
        columns=cols,
        rows=kept,
    )
    lines = [" | ".join(cols), *(" | ".join(map(str, r)) for r in kept)]
    head = f"query_sql: {len(kept)} rows" + (" (truncated)" if res.truncated else "")
    return res, "\n".join([head, Fence("rows").wrap(lines), *notes, UNTRUSTED_NOTE])
