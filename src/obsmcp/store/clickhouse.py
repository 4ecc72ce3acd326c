"""ClickHouse as obsmcp's store, through clickhouse-connect: a server over HTTP(S), or chDB in-process.

It reads the OpenTelemetry Collector ClickHouse exporter's tables as they are (storage.md section 1): the
column set is read from `system.columns` when the store opens, so both the current `otel_logs` schema and the
previous one (with `TimestampTime`, the column its primary key sorts by) work, and metric time columns may be
`DateTime` (v0.160+) or `DateTime64(9)`. With `create_tables` (obsmcp as the ingest target) it creates the
exporter's current tables where they are missing and never alters existing ones.

Every query runs with `readonly=1` (no writes, no settings changes, no file/url table functions: checked on
ClickHouse 26.9) and `max_execution_time`, so query_sql cannot leave the database or outlive its timeout.
Values are bound client-side: each `?` outside literals becomes a literal formatted by clickhouse-connect.
"""

from __future__ import annotations

import itertools
import queue
import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import clickhouse_connect
import pyarrow as pa
import structlog
from clickhouse_connect.driver.binding import format_query_value
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError, DatabaseError, OperationalError

from obsmcp.store import clickhouse_schema, schema
from obsmcp.store.database import QueryError, QueryTimeoutError, SqlRejectedError, StoreError
from obsmcp.store.dialect import Dialect
from obsmcp.store.url import StoreURL, parse_store_url

log = structlog.get_logger("obsmcp.store.clickhouse")

TIMEOUT_EXCEEDED = 159

# Table functions query_sql may use: they generate rows and read nothing.
_TABLE_FUNCTIONS = frozenset(
    {"numbers", "numbers_mt", "zeros", "zeros_mt", "generateseries", "generate_series", "values"}
)

# Applied to every query. NULL semantics like DuckDB's: unmatched LEFT JOIN columns and aggregates over no rows
# are NULL (ClickHouse defaults to the type's zero), and a bare UNION means UNION DISTINCT. readonly goes last:
# settings after it in the same request could not be set.
_QUERY_SETTINGS: dict[str, Any] = {
    "join_use_nulls": 1,
    "aggregate_functions_null_for_empty": 1,
    "union_default_mode": "DISTINCT",
}


# -- binding ? parameters ------------------------------------------------------------------------------

# Literals, quoted identifiers and comments, in which a ? is text; or a ? placeholder.
_TOKENS = re.compile(
    r"'(?:[^'\\]|\\.|'')*'|\"(?:[^\"\\]|\\.|\"\")*\"|`(?:[^`\\]|\\.)*`|--[^\n]*|/\*.*?\*/|\?",
    re.DOTALL,
)


def bind(sql: str, params: Sequence[Any]) -> str:
    """SQL with each ? placeholder replaced by the next parameter as a ClickHouse literal."""
    values = iter(params)
    used = 0

    def sub(m: re.Match[str]) -> str:
        nonlocal used
        if m.group(0) != "?":
            return m.group(0)
        try:
            value = next(values)
        except StopIteration:
            raise QueryError(f"the query has more ? placeholders than the {len(params)} parameters given") from None
        used += 1
        return str(format_query_value(value))

    out = _TOKENS.sub(sub, sql)
    if used != len(params):
        raise QueryError(f"the query has {used} ? placeholders but {len(params)} parameters were given")
    return out


# -- the store -------------------------------------------------------------------------------------------


class ClickHouseDatabase:
    """The store on ClickHouse: the `Store` interface of `obsmcp.store.database`, plus Arrow inserts."""

    def __init__(
        self,
        url: StoreURL | str,
        *,
        query_timeout_s: float = 30.0,
        create_tables: bool = False,
    ) -> None:
        self.url = parse_store_url(url) if isinstance(url, str) else url
        self.query_timeout_s = query_timeout_s
        self.database = self.url.database
        self._idle: queue.SimpleQueue[Client] = queue.SimpleQueue()
        self._all: list[Client] = []
        self._lock = threading.Lock()
        self._closed = False
        self._create_database = False
        if self.url.create_tables is not None:
            create_tables = self.url.create_tables
        try:
            self._create_database = create_tables
            with self._client() as client:
                if create_tables:
                    for ddl in clickhouse_schema.ALL:
                        client.command(ddl.format(db=f"`{self.database}`"))
                self.columns = self._read_columns(client)
        except (ClickHouseError, OSError) as e:
            self.close()
            raise StoreError(
                f"could not open the ClickHouse store {self.url}: {_first_line(e)}: check the URL, credentials and "
                "that the server is up"
            ) from None
        missing = [t.name for t in schema.TELEMETRY_TABLES if t.name not in self.columns]
        if missing:
            self.close()
            raise StoreError(
                f"the ClickHouse store {self.url} lacks the tables {', '.join(missing)}: point `store` at the "
                "database the OpenTelemetry Collector's clickhouseexporter writes to, or add ?create_tables=1 to "
                "let obsmcp create them"
            )
        # The previous otel_logs schema sorts by (ServiceName, TimestampTime): filtering on TimestampTime too
        # lets ClickHouse skip granules by primary key, which a Timestamp filter alone cannot there.
        log_key = "TimestampTime" if "TimestampTime" in self.columns["otel_logs"] else None
        self.dialect = Dialect("clickhouse", log_time_key=log_key)
        log.info("clickhouse_store_opened", store=self.url.redacted, logs_schema="previous" if log_key else "current")

    # -- clients -----------------------------------------------------------------------------------------

    def _new_client(self) -> Client:
        if self.url.kind == "chdb":
            client = clickhouse_connect.get_client(interface="chdb", path=self.url.path)
        else:
            client = clickhouse_connect.get_client(
                host=self.url.host,
                port=self.url.port,
                username=self.url.user,
                password=self.url.password,
                secure=self.url.secure,
                # Sessions would serialize concurrent queries from the tool threads ("session is locked").
                autogenerate_session_id=False,
                send_receive_timeout=int(self.query_timeout_s) + 10,
            )
        # Connected without a database so that create_tables can create it first; queries name no database.
        if self._create_database:
            client.command(f"CREATE DATABASE IF NOT EXISTS `{self.database}`")
        client.database = self.database
        return client

    @contextmanager
    def _client(self) -> Iterator[Client]:
        """A client for this call. Pooled: an HTTP client holds a connection pool, a chDB client an engine
        handle whose calls are serialized, so concurrent tool calls each take their own. Clients stay open
        until `close`: an in-memory chDB engine ends with its last handle."""
        if self._closed:
            raise StoreError(f"the ClickHouse store {self.url} is closed")
        try:
            client = self._idle.get_nowait()
        except queue.Empty:
            client = self._new_client()
            with self._lock:
                self._all.append(client)
        try:
            yield client
        finally:
            self._idle.put(client)

    def _read_columns(self, client: Client) -> dict[str, dict[str, str]]:
        names = [t.name for t in schema.TELEMETRY_TABLES]
        res = client.query(
            "SELECT table, name, type, default_kind FROM system.columns "
            f"WHERE database = {format_query_value(self.database)} AND table IN {format_query_value(tuple(names))}"
        )
        out: dict[str, dict[str, str]] = {}
        self.insertable: dict[str, list[str]] = {}
        for table, name, typ, default_kind in res.result_rows:
            out.setdefault(str(table), {})[str(name)] = str(typ)
            # MATERIALIZED and ALIAS columns cannot be inserted; DEFAULT ones (TimestampTime) fill themselves.
            if default_kind not in ("MATERIALIZED", "ALIAS", "EPHEMERAL"):
                self.insertable.setdefault(str(table), []).append(str(name))
        return out

    # -- the Store interface -----------------------------------------------------------------------------

    def query(
        self, sql: str, params: Sequence[Any] | None = None, *, timeout_s: float | None = None
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Run one read-only query with a time limit; returns (column names, rows)."""
        limit = self.query_timeout_s if timeout_s is None else timeout_s
        text = bind(sql, params) if params else sql
        settings = {**_QUERY_SETTINGS, "max_execution_time": max(1, round(limit)), "readonly": 1}
        try:
            with self._client() as client:
                res = client.query(text, settings=settings)
                return list(res.column_names), [tuple(r) for r in res.result_rows]
        except DatabaseError as e:
            if getattr(e, "code", None) == TIMEOUT_EXCEEDED or "TIMEOUT_EXCEEDED" in str(e):
                raise QueryTimeoutError(
                    f"the query ran longer than {limit:.0f}s and was stopped: narrow the time range or add filters"
                ) from None
            raise QueryError(_first_line(e)) from None
        except OperationalError as e:
            raise StoreError(f"ClickHouse at {self.url} did not answer: {_first_line(e)}") from None

    def check_read_only(self, sql: str) -> str:
        """The text of one SELECT (or WITH ... SELECT), checked by ClickHouse's own parser."""
        text = sql.strip().rstrip(";").strip()
        if not text:
            raise SqlRejectedError("sql is empty: write one SELECT (or WITH ... SELECT) statement")
        # One statement: a ; outside literals and comments means several (chDB would run them all).
        if ";" in "".join(t for t in _TOKENS.split(text) if t):
            raise SqlRejectedError("only one statement is allowed: send them one at a time, without ;")
        try:
            _, rows = self.query(f"EXPLAIN AST {text}")
        except QueryError as e:
            raise SqlRejectedError(f"the SQL does not parse: {e}") from None
        lines = [str(r[0]) for r in rows]
        kind = lines[0].split(" ")[0] if lines else ""
        if kind != "SelectWithUnionQuery":
            raise SqlRejectedError(
                f"query_sql is read-only: a {kind or 'non-SELECT'} statement is refused. "
                "Write a single SELECT or WITH ... SELECT"
            )
        # readonly=1 already refuses file(), url(), s3(), remote(), python() ...; this list keeps it that way
        # whatever the server's own settings allow.
        for above, line in itertools.pairwise(lines):
            name = line.strip().removeprefix("Function ").split(" ")[0]
            called = above.strip().startswith("TableExpression") and line.strip().startswith("Function ")
            if called and name.lower() not in _TABLE_FUNCTIONS:
                raise SqlRejectedError(
                    f"query_sql reads the telemetry tables only: the table function {name}() is refused"
                )
        return text

    def table_stats(self) -> dict[str, int]:
        _, rows = self.query(
            " UNION ALL ".join(f"SELECT '{t.name}', count() FROM {t.name}" for t in schema.TELEMETRY_TABLES)
        )
        return {str(name): int(n) for name, n in rows}

    def size_bytes(self) -> int:
        _, rows = self.query(
            "SELECT sum(bytes_on_disk) FROM system.parts WHERE active AND database = currentDatabase()"
        )
        return int(rows[0][0] or 0) if rows else 0

    def describe(self) -> str:
        return self.url.redacted

    def close(self) -> None:
        self._closed = True
        with self._lock:
            clients, self._all = self._all, []
        for client in clients:
            client.close()

    # -- writes (the ClickHouse writer) ------------------------------------------------------------------

    def insert_arrow(self, table: str, batch: pa.Table) -> None:
        """Insert one Arrow table (already in ClickHouse shape) without the read-only settings."""
        try:
            with self._client() as client:
                client.insert_arrow(table, batch)
        except DatabaseError as e:
            raise QueryError(f"insert into {table} failed: {_first_line(e)}") from None
        except OperationalError as e:
            raise StoreError(f"ClickHouse at {self.url} did not answer: {_first_line(e)}") from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
