"""Where DuckDB and ClickHouse SQL differ, in one table, so every query is written once.

Portable as-is on both engines (storage.md 3.3, and checked on ClickHouse 26.9 through chDB): `map['k']`
style access is not (DuckDB stores attributes as key/value lists), but ILIKE, `count(*) FILTER (WHERE ...)`,
`sum(x) FILTER (...)`, `ORDER BY ... LIMIT ... OFFSET`, positional GROUP BY, `GROUP BY ALL`, CTEs,
`WITH x AS MATERIALIZED`, window functions with an explicit frame, `count(DISTINCT x)`, `coalesce`/`nullif`,
`greatest`/`least`, `log2`/`floor`, `CAST(x AS DOUBLE|BIGINT|INTEGER)` and double-quoted identifiers are.
Everything else goes through a `Dialect` method, each one row of `_SQL` below.

Traps this table exists for: ClickHouse reads `//` as a comment (so `a // b` silently becomes `a`);
backslashes escape in ClickHouse string literals (a regex literal must double them); `substr`/`left` count
bytes in ClickHouse (the *UTF8 variants count characters, as DuckDB does); `lag` on ClickHouse returns the
type's default, not NULL, before the first row; a missing Map key reads as '' on ClickHouse, NULL in DuckDB.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# name -> (DuckDB template, ClickHouse template); {0}, {1}, ... are SQL fragments chosen by the caller.
_SQL: dict[str, tuple[str, str]] = {
    # A bound parameter holding UTC nanoseconds, as a timestamp comparable to the time columns.
    "ts_param": ("make_timestamp_ns(?)", "fromUnixTimestamp64Nano(?)"),
    # toDateTime64 first: the exporter's metric tables use DateTime (seconds) since v0.160.
    "epoch_ns": ("epoch_ns({0})", "toUnixTimestamp64Nano(toDateTime64({0}, 9))"),
    "epoch_ns_list": ("list_transform({0}, lambda x: epoch_ns(x))", "arrayMap(x -> toUnixTimestamp64Nano(x), {0})"),
    "int_div": ("(({0}) // ({1}))", "intDiv({0}, {1})"),
    # Exact, and equal across engines (storage.md 3.3): quantile_cont == quantileExactInclusive.
    "quantile": ("quantile_cont({0}, {1})", "quantileExactInclusive({1})({0})"),
    "quantiles": ("quantile_cont({0}, [{1}])", "quantilesExactInclusive({1})({0})"),
    # An attribute's value, NULL when absent. ClickHouse Maps answer '' for a missing key, so there an
    # attribute whose value is '' reads as absent too.
    "attr": ("attr({0}, {1})", "nullIf({0}[{1}], '')"),
    "attr_keys": ("attr_keys({0})", "mapKeys({0})"),
    "regex_match": ("regexp_matches({0}, {1})", "match({0}, {1})"),
    "regex_replace_all": ("regexp_replace({0}, {1}, {2}, 'g')", "replaceRegexpAll({0}, {1}, {2})"),
    # Capture group {2} of the first match, '' when none.
    "regex_extract": ("regexp_extract({0}, {1}, {2})", "regexpExtract({0}, {1}, {2})"),
    "any_value": ("any_value({0})", "any({0})"),
    "arg_min": ("arg_min({0}, {1})", "argMin({0}, {1})"),
    "bool_or": ("bool_or({0})", "max({0})"),
    "mode": ("mode({0})", "topKIf(1)({0}, {0} IS NOT NULL)[1]"),
    "md5_hex": ("md5({0})", "lower(hex(MD5({0})))"),
    "hash": ("hash({0})", "cityHash64({0})"),
    "first_line": ("split_part({0}, chr(10), 1)", "substringIndex({0}, '\\n', 1)"),
    "substr": ("substr({0}, {1}, {2})", "substringUTF8({0}, {1}, {2})"),
    "left": ("left({0}, {1})", "leftUTF8({0}, {1})"),
    # 1-based position of {1} in array {0}; 0 or NULL when absent.
    "list_position": ("list_position({0}, {1})", "indexOf({0}, {1})"),
    "list_last": ("list_last({0})", "arrayElement({0}, -1)"),
    "try_int": ("TRY_CAST({0} AS INTEGER)", "toInt32OrNull(toString({0}))"),
    # The previous row's value in the window, NULL for the first row.
    "lag": ("lag({0})", "lagInFrame(toNullable({0}))"),
    # Aggregates into arrays.
    "agg_list": ("list({0})", "groupArray({0})"),
    "agg_sorted_distinct": (
        "list_slice(list_sort(list_distinct(list({0}) FILTER (WHERE {1}))), 1, {2})",
        "arraySlice(arraySort(groupUniqArrayIf({0}, {1})), 1, {2})",
    ),
    "agg_newest": (
        "list_slice(list({0} ORDER BY {1} DESC) FILTER (WHERE {2}), 1, {3})",
        "arraySlice(arrayMap(p -> p.1, arrayReverseSort(p -> p.2, groupArrayIf(({0}, {1}), {2}))), 1, {3})",
    ),
    "agg_distinct_keys": (
        "list_slice(list_sort(list_distinct(flatten(list(DISTINCT attr_keys({0}))))), 1, {1})",
        "arraySlice(arraySort(groupUniqArrayArray(mapKeys({0}))), 1, {1})",
    ),
    # Sum of the histogram bucket counts {0} whose upper bound in {1} is at most the bound parameter.
    "buckets_at_or_below": (
        "list_sum(list_slice({0}, 1, len(list_filter({1}, lambda b: b <= ?))))",
        "arraySum(arraySlice({0}, 1, length(arrayFilter(b -> b <= ?, {1}))))",
    ),
    # A number identifying a span row for a later point lookup (see `rows_by_id`). ClickHouse has no row id:
    # there it is start time (ns) and a hash of the span id packed into one 128-bit number, which also sorts
    # by time.
    "row_id": (
        "{0}rowid",
        'bitShiftLeft(toUInt128(toUnixTimestamp64Nano({0}"Timestamp")), 64) + cityHash64({0}"SpanId")',
    ),
}


@dataclass(frozen=True)
class Dialect:
    name: str
    # The previous exporter otel_logs schema's second-resolution sort column ("TimestampTime"), which log
    # time filters repeat so ClickHouse can prune by primary key (see `Where.log_time`).
    log_time_key: str | None = None

    def _t(self, op: str, *args: object) -> str:
        duck, clickhouse = _SQL[op]
        return (duck if self.name == "duckdb" else clickhouse).format(*args)

    # -- time ------------------------------------------------------------------------------------------

    def ts_param(self) -> str:
        return self._t("ts_param")

    def epoch_ns(self, col: str) -> str:
        return self._t("epoch_ns", col)

    def epoch_ns_list(self, col: str) -> str:
        """An array of timestamps as an array of epoch nanoseconds."""
        return self._t("epoch_ns_list", col)

    def int_div(self, a: str, b: str) -> str:
        return self._t("int_div", a, b)

    def time_bucket(self, col: str, step_s: int) -> str:
        """Start of the step-second bucket holding col, as epoch nanoseconds."""
        step_ns = step_s * 1_000_000_000
        return f"({self.int_div(self.epoch_ns(col), str(step_ns))} * {step_ns})"

    # -- aggregates ------------------------------------------------------------------------------------

    def quantile(self, col: str, q: float) -> str:
        return self._t("quantile", col, q)

    def quantiles(self, col: str, qs: tuple[float, ...]) -> str:
        """Several exact quantiles in one pass, as a list."""
        return self._t("quantiles", col, ", ".join(map(str, qs)))

    def any_value(self, col: str) -> str:
        return self._t("any_value", col)

    def arg_min(self, value: str, key: str) -> str:
        return self._t("arg_min", value, key)

    def bool_or(self, col: str) -> str:
        return self._t("bool_or", col)

    def mode(self, col: str) -> str:
        """The most frequent non-NULL value."""
        return self._t("mode", col)

    def agg_list(self, col: str) -> str:
        return self._t("agg_list", col)

    def list_distinct_agg(self, col: str, limit: int, where: str = "TRUE") -> str:
        """The sorted distinct non-NULL values (of rows matching `where`), at most `limit`."""
        return self._t("agg_sorted_distinct", col, where, limit)

    def newest_agg(self, col: str, order_by: str, limit: int, where: str = "TRUE") -> str:
        """Values of col from the rows with the largest `order_by` first, at most `limit`."""
        return self._t("agg_newest", col, order_by, where, limit)

    def distinct_keys_agg(self, col: str, limit: int) -> str:
        """The sorted distinct keys of an attribute column over the group, at most `limit`."""
        return self._t("agg_distinct_keys", col, limit)

    def lag(self, col: str) -> str:
        """Use with a `ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW` frame (ClickHouse honours frames)."""
        return self._t("lag", col)

    # -- attributes ------------------------------------------------------------------------------------

    def attr(self, col: str, key_sql: str) -> str:
        """The value of attribute key_sql (a literal or ?) in an attribute column, NULL when absent."""
        return self._t("attr", col, key_sql)

    def attr_keys(self, col: str) -> str:
        return self._t("attr_keys", col)

    # -- strings ---------------------------------------------------------------------------------------

    def literal(self, text: str) -> str:
        """A string literal. Backslashes are escapes in ClickHouse literals, plain characters in DuckDB's."""
        if self.name == "duckdb":
            return "'" + text.replace("'", "''") + "'"
        return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"

    def regex_match(self, col: str, pattern_sql: str = "?") -> str:
        """col matches the RE2 pattern (a bound parameter by default)."""
        return self._t("regex_match", col, pattern_sql)

    def regex_replace_all(self, col: str, pattern: str, replacement: str) -> str:
        return self._t("regex_replace_all", col, self.literal(pattern), self.literal(replacement))

    def regex_extract(self, col: str, pattern: str, group: int) -> str:
        return self._t("regex_extract", col, self.literal(pattern), group)

    def regex_last_match(self, col: str, pattern: str) -> str:
        """The text of the pattern's last match in col (col must match)."""
        if self.name == "duckdb":
            return self._t("list_last", f"regexp_extract_all({col}, {self.literal(pattern)}, 0)")
        # extractAll returns capture group 1: one group around the whole pattern makes it the whole match.
        return self._t("list_last", f"extractAll({col}, {self.literal('(' + pattern + ')')})")

    def md5_hex(self, col: str) -> str:
        return self._t("md5_hex", col)

    def hash(self, col: str) -> str:
        """A 64-bit hash; differs between engines, so only for sampling, never for ids."""
        return self._t("hash", col)

    def first_line(self, col: str) -> str:
        return self._t("first_line", col)

    def substr(self, col: str, start: int, length: int) -> str:
        """Characters (not bytes) start..start+length-1, 1-based."""
        return self._t("substr", col, start, length)

    def left(self, col: str, length: int) -> str:
        return self._t("left", col, length)

    def try_int(self, col: str) -> str:
        """col as an integer, NULL when it is not one."""
        return self._t("try_int", col)

    # -- arrays ----------------------------------------------------------------------------------------

    def list_position(self, col: str, value_sql: str) -> str:
        return self._t("list_position", col, value_sql)

    def buckets_at_or_below(self, counts_col: str, bounds_col: str) -> str:
        """Histogram count in buckets whose upper bound is at most the bound parameter (one ?)."""
        return self._t("buckets_at_or_below", counts_col, bounds_col)

    def values_relation(self, columns: Sequence[tuple[str, str]]) -> str:
        """A relation with one row per element of parallel array parameters: (name, "VARCHAR"|"BIGINT") each
        becomes one ? bound to a list."""
        if self.name == "duckdb":
            return "(SELECT " + ", ".join(f"unnest(?::{t}[]) AS {n}" for n, t in columns) + ")"
        picks = ", ".join(f"z.{i} AS {n}" for i, (n, _) in enumerate(columns, 1))
        zipped = ", ".join("?" for _ in columns)
        return f"(SELECT {picks} FROM (SELECT arrayJoin(arrayZip({zipped})) AS z))"

    # -- rows ------------------------------------------------------------------------------------------

    def row_id(self, alias: str = "") -> str:
        """The row id expression of otel_traces (alias: a table alias, e.g. "t")."""
        return self._t("row_id", f"{alias}." if alias else "")

    def rows_by_id(self, columns: str, ids: Sequence[int]) -> str:
        """SELECT (row id, columns) FROM otel_traces for the given row ids (integers from `row_id`, inlined).

        DuckDB: one point lookup per id as a UNION ALL (an IN list turns into a semi-join over the whole
        table, 4x slower at 10M spans). ClickHouse: one scan pruned to the ids' time range.
        """
        ids = sorted({int(i) for i in ids})
        if self.name == "duckdb":
            return " UNION ALL ".join(f"SELECT rowid, {columns} FROM otel_traces WHERE rowid = {i}" for i in ids)
        keys = ", ".join(f"({i >> 64}, {i & (2**64 - 1)})" for i in ids)
        lo, hi = min(ids) >> 64, max(ids) >> 64
        return (
            f"SELECT {self.row_id()}, {columns} FROM otel_traces "
            f'WHERE "Timestamp" >= fromUnixTimestamp64Nano({lo}) AND "Timestamp" <= fromUnixTimestamp64Nano({hi}) '
            f'AND (toUnixTimestamp64Nano("Timestamp"), cityHash64("SpanId")) IN ({keys})'
        )

    def table_sample(self, percent: float) -> str | None:
        """A FROM-clause suffix reading about `percent` % of a table, or None when the engine cannot (the
        exporter's tables have no SAMPLE BY key, which ClickHouse's SAMPLE needs)."""
        return f" TABLESAMPLE system({percent}%)" if self.name == "duckdb" else None


DUCKDB = Dialect("duckdb")
CLICKHOUSE = Dialect("clickhouse")
