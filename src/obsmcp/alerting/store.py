"""Alert history, tool-created rules and silences, kept in the store beside the telemetry.

Three append-only tables (DuckDB, or ClickHouse/chDB): `obsmcp_alert_rules` and `obsmcp_alert_silences` hold
one row per version (the newest row of a name wins; a deleted rule is a row with deleted = true), and
`obsmcp_alert_events` one row per transition. The alerts that were pending or firing when the server stopped
are the newest event of each fingerprint in those states: a restart picks them up and does not fire them again.
A ClickHouse server obsmcp was only pointed at (no ?create_tables=1) gets no tables: the state is then kept in
memory, and the log says so.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

import structlog

from obsmcp.alerting.model import Alert, AlertRule, AlertTransition, Silence
from obsmcp.store.database import Database, Store

log = structlog.get_logger("obsmcp.alerting")

HISTORY_KEEP_S = 30 * 86400
_DUCKDB_DDL = (
    "CREATE TABLE IF NOT EXISTS obsmcp_alert_rules (name VARCHAR, body VARCHAR, deleted BOOLEAN, version BIGINT)",
    "CREATE TABLE IF NOT EXISTS obsmcp_alert_silences (id VARCHAR, body VARCHAR, ends_ns BIGINT, version BIGINT)",
    "CREATE TABLE IF NOT EXISTS obsmcp_alert_events (at_ns BIGINT, seq BIGINT, rule VARCHAR, fingerprint VARCHAR, "
    "state VARCHAR, previous VARCHAR, body VARCHAR)",
)
_CLICKHOUSE_DDL = (
    "CREATE TABLE IF NOT EXISTS obsmcp_alert_rules (name String, body String, deleted Bool, version Int64) "
    "ENGINE = MergeTree ORDER BY (name, version)",
    "CREATE TABLE IF NOT EXISTS obsmcp_alert_silences (id String, body String, ends_ns Int64, version Int64) "
    "ENGINE = MergeTree ORDER BY (id, version)",
    "CREATE TABLE IF NOT EXISTS obsmcp_alert_events (at_ns Int64, seq Int64, rule String, fingerprint String, "
    "state String, previous String, body String) ENGINE = MergeTree ORDER BY seq "
    "TTL toDateTime(intDiv(at_ns, 1000000000)) + INTERVAL 30 DAY",
)


class AlertStore:
    """Persistence of the alert engine's state; in memory only when the store cannot hold it."""

    def __init__(self, db: Store) -> None:
        self.db = db
        self._lock = threading.Lock()
        self._memory_events: deque[AlertTransition] = deque(maxlen=10_000)
        self._memory_rules: dict[str, AlertRule] = {}
        self._memory_silences: dict[str, Silence] = {}
        self.persistent = False
        try:
            for ddl in _DUCKDB_DDL if isinstance(db, Database) else _CLICKHOUSE_DDL:
                self._execute(ddl)
            self.persistent = True
        except Exception as e:  # a read-only ClickHouse user, a server without the privilege: keep going in memory
            log.warning(
                "alert_state_in_memory",
                store=db.describe(),
                reason=str(e).splitlines()[0][:200] if str(e) else type(e).__name__,
                fix="alert history and tool-made rules will not survive a restart: let obsmcp create tables "
                "(?create_tables=1) or use the embedded store",
            )
        _, rows = self.db.query("SELECT max(seq) FROM obsmcp_alert_events") if self.persistent else ([], [])
        start = int(rows[0][0]) + 1 if rows and rows[0][0] is not None else 1
        # Unique across restarts too: a later process starts above every stored seq and above the clock.
        self._seq = itertools.count(max(start, time.time_ns() // 1000))
        self._last_prune = 0.0

    # -- writes ------------------------------------------------------------------------------------------------

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        db = self.db
        if isinstance(db, Database):
            cur = db.cursor()
            try:
                cur.execute(sql, list(params))
            finally:
                cur.close()
            return
        from obsmcp.store.clickhouse import ClickHouseDatabase, bind

        assert isinstance(db, ClickHouseDatabase)
        with db._client() as client:
            client.command(bind(sql, params) if params else sql)

    def save_rule(self, rule: AlertRule) -> None:
        with self._lock:
            self._memory_rules[rule.name] = rule
            if self.persistent:
                self._execute(
                    "INSERT INTO obsmcp_alert_rules VALUES (?, ?, false, ?)",
                    [rule.name, rule.model_dump_json(by_alias=True), next(self._seq)],
                )

    def delete_rule(self, name: str) -> None:
        with self._lock:
            self._memory_rules.pop(name, None)
            if self.persistent:
                self._execute("INSERT INTO obsmcp_alert_rules VALUES (?, '', true, ?)", [name, next(self._seq)])

    def save_silence(self, silence: Silence) -> None:
        with self._lock:
            self._memory_silences[silence.id] = silence
            if self.persistent:
                self._execute(
                    "INSERT INTO obsmcp_alert_silences VALUES (?, ?, ?, ?)",
                    [silence.id, silence.model_dump_json(), int(silence.ends_at.timestamp() * 1e9), next(self._seq)],
                )

    def add_events(self, transitions: Sequence[AlertTransition]) -> None:
        if not transitions:
            return
        with self._lock:
            self._memory_events.extend(transitions)
            if not self.persistent:
                return
            values = []
            params: list[Any] = []
            for t in transitions:
                values.append("(?, ?, ?, ?, ?, ?, ?)")
                params += [
                    int(t.at.timestamp() * 1e9),
                    next(self._seq),
                    t.alert.rule,
                    t.alert.fingerprint,
                    t.alert.state,
                    t.previous or "",
                    t.model_dump_json(),
                ]
            self._execute(f"INSERT INTO obsmcp_alert_events VALUES {', '.join(values)}", params)
            if isinstance(self.db, Database) and time.monotonic() - self._last_prune > 3600:
                self._last_prune = time.monotonic()
                # Old transitions go, but never the newest one of an alert (it holds a long-firing alert's state).
                self._execute(
                    "DELETE FROM obsmcp_alert_events WHERE at_ns < ? AND seq NOT IN "
                    "(SELECT max(seq) FROM obsmcp_alert_events GROUP BY fingerprint)",
                    [time.time_ns() - HISTORY_KEEP_S * 10**9],
                )

    # -- reads -------------------------------------------------------------------------------------------------

    def rules(self) -> list[AlertRule]:
        if not self.persistent:
            with self._lock:  # copied under the lock: writers change these from other threads
                return list(self._memory_rules.values())
        _, rows = self.db.query("SELECT name, body, deleted FROM obsmcp_alert_rules ORDER BY version")
        latest: dict[str, AlertRule | None] = {}
        for name, body, deleted in rows:
            latest[str(name)] = None if deleted else AlertRule.model_validate_json(str(body))
        return [r for r in latest.values() if r is not None]

    def silences(self, now_ns: int) -> list[Silence]:
        if not self.persistent:
            with self._lock:
                kept = list(self._memory_silences.values())
            return [s for s in kept if s.ends_at.timestamp() * 1e9 > now_ns]
        _, rows = self.db.query(
            "SELECT id, body FROM obsmcp_alert_silences WHERE ends_ns > ? ORDER BY version", [now_ns]
        )
        latest = {str(i): Silence.model_validate_json(str(b)) for i, b in rows}
        return list(latest.values())

    def history(self, limit: int) -> list[AlertTransition]:
        if not self.persistent:
            with self._lock:
                events = list(self._memory_events)
            return events[::-1][:limit]
        _, rows = self.db.query("SELECT body FROM obsmcp_alert_events ORDER BY seq DESC LIMIT ?", [int(limit)])
        out = []
        for (body,) in rows:
            with contextlib.suppress(ValueError):
                out.append(AlertTransition.model_validate_json(str(body)))
        return out

    def active(self) -> list[Alert]:
        """The alerts pending or firing when the state was last written (for a restart)."""
        if not self.persistent:
            return []
        _, rows = self.db.query(
            "SELECT body FROM obsmcp_alert_events WHERE seq IN "
            "(SELECT max(seq) FROM obsmcp_alert_events GROUP BY fingerprint) AND state IN ('pending', 'firing')"
        )
        out = []
        for (body,) in rows:
            with contextlib.suppress(ValueError):
                out.append(AlertTransition.model_validate_json(str(body)).alert)
        return out
