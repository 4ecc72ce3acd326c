"""A WHERE clause built from parts with bound parameters; values never enter SQL text."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from obsmcp.store.dialect import Dialect


@dataclass
class Where:
    dialect: Dialect
    clauses: list[str] = field(default_factory=list)
    params: list[Any] = field(default_factory=list)

    def add(self, clause: str, *params: Any) -> Where:
        self.clauses.append(clause)
        self.params.extend(params)
        return self

    def time(self, col: str, start_ns: int, end_ns: int) -> Where:
        p = self.dialect.ts_param()
        return self.add(f'"{col}" >= {p} AND "{col}" < {p}', start_ns, end_ns)

    def log_time(self, start_ns: int, end_ns: int) -> Where:
        """`time` on otel_logs.Timestamp, plus the sort key's second-resolution column when the table has one."""
        self.time("Timestamp", start_ns, end_ns)
        key = self.dialect.log_time_key
        if key:
            # Whole seconds around the range: the column is toDateTime(Timestamp), truncated.
            self.add(f'"{key}" >= toDateTime(?) AND "{key}" <= toDateTime(?)', start_ns // 10**9, -(-end_ns // 10**9))
        return self

    def contains(self, col: str, text: str) -> Where:
        """Case-insensitive substring match; LIKE wildcards in the text are matched literally."""
        escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        backslash = self.dialect.literal("\\")
        return self.add(f'"{col}" ILIKE ? ESCAPE {backslash}', f"%{escaped}%")

    def attribute(self, maps: tuple[str, ...], key: str, value: str) -> Where:
        """Any of the given Map columns has key == value."""
        ors = " OR ".join(f"{self.dialect.attr(col(m), '?')} = ?" for m in maps)
        params: list[Any] = []
        for _ in maps:
            params.extend([key, value])
        return self.add(f"({ors})", *params)

    def sql(self) -> str:
        return " AND ".join(self.clauses) if self.clauses else "TRUE"

    def copy(self) -> Where:
        return Where(self.dialect, list(self.clauses), list(self.params))


def col(name: str) -> str:
    """A quoted column identifier (the exporter's dotted names like Events.Name need quotes)."""
    return f'"{name}"'
