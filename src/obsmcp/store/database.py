"""The embedded DuckDB store: one owning process, reads through per-call cursors, one writer thread.

DuckDB lets exactly one process open a file read-write, and while it does no other process may open it at
all (storage.md 3.5). So the server that owns the data directory is the only process that touches the file;
everything else (a second MCP client's stdio server, the CLI) goes through that server.
"""

from __future__ import annotations

import heapq
import itertools
import re
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import duckdb
import structlog

from obsmcp.store import schema
from obsmcp.store.dialect import DUCKDB, Dialect

log = structlog.get_logger("obsmcp.store")


class StoreError(RuntimeError):
    """The store could not be opened or queried."""


class StoreLockedError(StoreError):
    """Another process owns the DuckDB file."""


class QueryTimeoutError(StoreError):
    """A query ran past its time limit and was interrupted."""


class QueryError(StoreError):
    """The engine refused or failed a query (bad SQL, a type error); the message is the engine's."""


class SqlRejectedError(StoreError):
    """query_sql text that is not a single read-only statement; the message says what to write instead."""


# What a failed query raises, on either engine.
QUERY_ERRORS: tuple[type[Exception], ...] = (duckdb.Error, QueryError)


class Store(Protocol):
    """What tools need from a store: the embedded DuckDB `Database` or `ClickHouseDatabase`."""

    dialect: Dialect
    query_timeout_s: float

    def query(
        self, sql: str, params: Sequence[Any] | None = None, *, timeout_s: float | None = None
    ) -> tuple[list[str], list[tuple[Any, ...]]]: ...

    def check_read_only(self, sql: str) -> str: ...

    def table_stats(self) -> dict[str, int]: ...

    def size_bytes(self) -> int: ...

    def describe(self) -> str:
        """Which store this is, for logs and health: never a password."""
        ...

    def close(self) -> None: ...


# Defense in depth beside the statement-type check: DuckDB classifies `WITH d AS (DELETE ... RETURNING *)
# SELECT ...` as a SELECT. Words are looked for outside string literals, quoted identifiers and comments.
_WRITE_WORDS = re.compile(
    r"\b(insert|update|delete|merge|copy|attach|detach|install|load|pragma|set|reset|call|create|drop|alter|"
    r"export|import|checkpoint|vacuum|truncate|grant|revoke|use)\b",
    re.IGNORECASE,
)
_LITERALS = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|--[^\n]*|/\*.*?\*/", re.DOTALL)


class Watchdog:
    """Calls a function when its deadline passes, unless disarmed first: one thread for every query's time limit.

    A threading.Timer per query starts and joins a thread each time (~0.2 ms, a large share of a cheap tool
    call); here arming and disarming are a heap push and a set update under a lock.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int]] = []
        # Armed tickets -> what to call. Disarming drops the callable at once (it holds the query's cursor);
        # the heap entry goes lazily.
        self._live: dict[int, Callable[[], None]] = {}
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None

    def arm(self, seconds: float, fire: Callable[[], None]) -> int:
        with self._cond:
            ticket = next(self._ids)
            heapq.heappush(self._heap, (time.monotonic() + seconds, ticket))
            self._live[ticket] = fire
            if self._thread is None:
                self._thread = threading.Thread(target=self._main, name="obsmcp-query-watchdog", daemon=True)
                self._thread.start()
            elif self._heap[0][1] == ticket:
                self._cond.notify()  # the new deadline is the nearest one
            return ticket

    def disarm(self, ticket: int) -> None:
        with self._cond:
            self._live.pop(ticket, None)

    def _main(self) -> None:
        while True:
            with self._cond:
                while self._heap and self._heap[0][1] not in self._live:
                    heapq.heappop(self._heap)  # disarmed: drop lazily
                if not self._heap:
                    self._cond.wait()
                    continue
                deadline, ticket = self._heap[0]
                wait = deadline - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                heapq.heappop(self._heap)
                fire = self._live.pop(ticket)
            try:
                fire()
            except Exception as e:  # the query ended as its deadline passed: its cursor may be closed already
                log.debug("query_watchdog_fire_failed", error=str(e))
            del fire  # holds the cursor: do not keep it alive while waiting for the next deadline


WATCHDOG = Watchdog()


class Database:
    """A DuckDB file (or in-memory database when path is None) in the exporter's schema."""

    dialect: Dialect = DUCKDB

    def __init__(self, path: Path | None, *, query_timeout_s: float = 30.0, threads: int | None = None) -> None:
        self.path = path
        self.query_timeout_s = query_timeout_s
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        # No file or network access from SQL: query_sql runs agent-written SELECTs, and read_csv('/etc/..')
        # is a SELECT too. The store file itself is opened by connect(), before this applies.
        config: dict[str, Any] = {"enable_external_access": False}
        if threads:
            config["threads"] = threads
        try:
            self._con = duckdb.connect(str(path) if path else ":memory:", config=config)
        except duckdb.IOException as e:
            if "lock" in str(e).lower():
                raise StoreLockedError(f"{path} is in use by another process: {e}") from None
            raise StoreError(f"could not open the store at {path}: {e}") from None
        self._lock = threading.Lock()
        self._migrate()

    def _migrate(self) -> None:
        con = self._con
        con.execute(schema.META_DDL)
        row = con.execute("SELECT value FROM obsmcp_meta WHERE key = 'schema_version'").fetchone()
        if row is not None and int(row[0]) > schema.SCHEMA_VERSION:
            raise StoreError(
                f"the store at {self.path} has schema version {row[0]}, newer than this obsmcp understands "
                f"({schema.SCHEMA_VERSION}): upgrade obsmcp, or point --data-dir elsewhere"
            )
        if row is not None and int(row[0]) < schema.SCHEMA_VERSION:
            raise StoreError(
                f"the store at {self.path} has schema version {row[0]} from an earlier obsmcp; this version "
                f"uses {schema.SCHEMA_VERSION} and cannot migrate it: move it aside or point --data-dir elsewhere"
            )
        for table in schema.TELEMETRY_TABLES:
            con.execute(table.ddl())
        for macro in schema.MACROS_DDL:
            con.execute(macro)
        con.execute("INSERT OR REPLACE INTO obsmcp_meta VALUES ('schema_version', ?)", [str(schema.SCHEMA_VERSION)])

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A cursor for one thread (DuckDB connections are not shared across threads)."""
        with self._lock:
            return self._con.cursor()

    def query(
        self, sql: str, params: Sequence[Any] | None = None, *, timeout_s: float | None = None
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Run one read query on a fresh cursor with a time limit; returns (column names, rows)."""
        cur = self.cursor()
        limit = self.query_timeout_s if timeout_s is None else timeout_s
        timer = WATCHDOG.arm(limit, cur.interrupt)
        try:
            res = cur.execute(sql, list(params) if params else [])
            names = [d[0] for d in res.description] if res.description else []
            rows = res.fetchall()
        except duckdb.InterruptException:
            raise QueryTimeoutError(
                f"the query ran longer than {limit:.0f}s and was stopped: narrow the time range or add filters"
            ) from None
        finally:
            WATCHDOG.disarm(timer)
            cur.close()
        return names, rows

    def check_read_only(self, sql: str) -> str:
        """The text of one read-only statement (SELECT or WITH ... SELECT), else SqlRejectedError."""
        text = sql.strip().rstrip(";").strip()
        if not text:
            raise SqlRejectedError("sql is empty: write one SELECT (or WITH ... SELECT) statement")
        try:
            statements = duckdb.extract_statements(text)
        except duckdb.Error as e:
            raise SqlRejectedError(f"the SQL does not parse: {str(e).splitlines()[0]}") from None
        if len(statements) != 1:
            raise SqlRejectedError(f"only one statement is allowed, got {len(statements)}: send them one at a time")
        word = _WRITE_WORDS.search(_LITERALS.sub(" ", text))
        if statements[0].type == duckdb.StatementType.SELECT and word:
            raise SqlRejectedError(
                f"query_sql is read-only: {word.group(1).upper()} is not allowed. "
                "Write a single SELECT or WITH ... SELECT"
            )
        if statements[0].type != duckdb.StatementType.SELECT:
            kind = str(statements[0].type).split(".")[-1]
            raise SqlRejectedError(
                f"query_sql is read-only: a {kind} statement is refused. Write a single SELECT or WITH ... SELECT"
            )
        return text

    def describe(self) -> str:
        return f"duckdb:{self.path}" if self.path else "duckdb:memory"

    def table_stats(self) -> dict[str, int]:
        """Row count per telemetry table."""
        _, rows = self.query(
            " UNION ALL ".join(f"SELECT '{t.name}', count(*) FROM {t.name}" for t in schema.TELEMETRY_TABLES)
        )
        return {str(name): int(n) for name, n in rows}

    def size_bytes(self) -> int:
        if self.path is None:
            return 0
        total = 0
        for p in (self.path, self.path.with_name(self.path.name + ".wal")):
            if p.exists():
                total += p.stat().st_size
        return total

    def raw_connection(self) -> duckdb.DuckDBPyConnection:
        return self._con

    def close(self) -> None:
        with self._lock:
            self._con.close()
