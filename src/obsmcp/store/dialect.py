"""Where DuckDB and ClickHouse SQL differ, in one table, so every query is written once.

Portable as-is on both engines (storage.md 3.3): `map['k']`, ILIKE, `count(*) FILTER (WHERE ...)`,
`ORDER BY ... LIMIT ... OFFSET`, `regexp_matches`. Everything else goes through a Dialect method.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Dialect:
    name: str

    def ts_param(self) -> str:
        """A bound parameter holding UTC nanoseconds, as a timestamp comparable to the time columns."""
        return "make_timestamp_ns(?)" if self.name == "duckdb" else "fromUnixTimestamp64Nano(?)"

    def epoch_ns(self, col: str) -> str:
        return f"epoch_ns({col})" if self.name == "duckdb" else f"toUnixTimestamp64Nano({col})"

    def quantile(self, col: str, q: float) -> str:
        # Exact, and equal across engines (storage.md 3.3): quantile_cont == quantileExactInclusive.
        if self.name == "duckdb":
            return f"quantile_cont({col}, {q})"
        return f"quantileExactInclusive({q})({col})"

    def quantiles(self, col: str, qs: tuple[float, ...]) -> str:
        """Several exact quantiles in one pass, as a list."""
        if self.name == "duckdb":
            return f"quantile_cont({col}, [{', '.join(map(str, qs))}])"
        return f"quantilesExactInclusive({', '.join(map(str, qs))})({col})"

    def time_bucket(self, col: str, step_s: int) -> str:
        """Start of the step-second bucket holding col, as epoch nanoseconds."""
        step_ns = step_s * 1_000_000_000
        return f"({self.epoch_ns(col)} // {step_ns}) * {step_ns}"

    def attr(self, col: str, key_sql: str) -> str:
        """The value of attribute key_sql (a literal or ?) in an attribute column, NULL when absent."""
        return f"attr({col}, {key_sql})" if self.name == "duckdb" else f"{col}[{key_sql}]"

    def attr_keys(self, col: str) -> str:
        return f"attr_keys({col})" if self.name == "duckdb" else f"mapKeys({col})"

    def regex_match(self, col: str) -> str:
        """col matches the bound regex parameter."""
        return f"regexp_matches({col}, ?)" if self.name == "duckdb" else f"match({col}, ?)"

    def any_value(self, col: str) -> str:
        return f"any_value({col})" if self.name == "duckdb" else f"any({col})"

    def list_distinct_agg(self, col: str, limit: int) -> str:
        if self.name == "duckdb":
            return f"list_slice(list_sort(list_distinct(list({col}))), 1, {limit})"
        return f"arraySlice(arraySort(groupUniqArray({col})), 1, {limit})"


DUCKDB = Dialect("duckdb")
CLICKHOUSE = Dialect("clickhouse")
