"""Per-(time bucket, service) trace structure sums from the store: the input of root-cause ranking.

One SQL pass over a deterministic sample of traces: each span is joined to its parent (to know whether it is
a service's entry span and whose call it is) and to a summary of its children (to know whether an error
started in it, and which service a failed call was waiting on). See analysis/investigate.py for why these
sums and not plain RED figures.
"""

from __future__ import annotations

from dataclasses import dataclass

from obsmcp.analysis.investigate import Cell, StructureSeries
from obsmcp.store.where import col
from obsmcp.timerange import TimeRange
from obsmcp.tools.context import ToolContext

# Spans joined per query, at most: a trace sample keeps the self-joins bounded on big stores. Sampling by
# trace id keeps whole traces together, so every sum stays consistent within the sample.
MAX_SAMPLED_SPANS = 120_000
MAX_REPRESENTATIVES = 96


@dataclass(frozen=True)
class Sample:
    modulus: int  # 1 = every trace
    spans_in_range: int

    @property
    def note(self) -> str | None:
        if self.modulus == 1:
            return None
        return (
            f"trace structure from a 1-in-{self.modulus} sample of traces (by trace id) of "
            f"{self.spans_in_range:,} spans; per-trace figures are estimates"
        )


def choose_sample(ctx: ToolContext, tr: TimeRange) -> Sample:
    d = ctx.dialect
    _, rows = ctx.db.query(
        f'SELECT count(*) FROM otel_traces WHERE "Timestamp" >= {d.ts_param()} AND "Timestamp" < {d.ts_param()}',
        [tr.start_ns, tr.end_ns],
    )
    n = int(rows[0][0])
    return Sample(max(1, -(-n // MAX_SAMPLED_SPANS)), n)


def structure_series(ctx: ToolContext, tr: TimeRange, step_ns: int, sample: Sample) -> StructureSeries:
    d = ctx.dialect
    ts = d.ts_param()
    sample_sql = f"AND {d.hash(col('TraceId'))} % {sample.modulus} = 0" if sample.modulus > 1 else ""
    addr = d.attr('"SpanAttributes"', "'server.address'")
    peer = d.attr('"SpanAttributes"', "'peer.service'")
    sql = f"""
    WITH s AS MATERIALIZED (
      SELECT "TraceId" AS t, "SpanId" AS id, "ParentSpanId" AS pid, "ServiceName" AS svc, "SpanKind" AS kind,
             "Duration" AS dur, "StatusCode" = 'Error' AS err, "SpanName" AS name, {d.row_id()} AS rid,
             {d.int_div(d.epoch_ns('"Timestamp"') + " - ?", "?")} AS b,
             CASE WHEN "StatusCode" = 'Error' THEN coalesce({peer}, {addr}, '') END AS callee
      FROM otel_traces
      WHERE "Timestamp" >= {ts} AND "Timestamp" < {ts} {sample_sql}
    ), kids AS (
      SELECT pid, {d.bool_or("err")} AS kerr, max(svc) AS ksvc FROM s WHERE pid <> '' GROUP BY pid
    ), known AS (SELECT DISTINCT svc FROM s), j AS MATERIALIZED (
      -- Named explicitly: ClickHouse calls a self-join's columns "s.b", not "b".
      SELECT s.b AS b, s.svc AS svc, s.kind AS kind, s.dur AS dur, s.err AS err, s.pid AS pid, s.callee AS callee,
             p.svc AS psvc, p.dur AS pdur, k.kerr AS kerr, k.ksvc AS ksvc
      FROM s LEFT JOIN s AS p ON s.pid = p.id
             LEFT JOIN kids AS k ON k.pid = s.id
    ), blamed AS (
      SELECT b, svc AS caller,
             CASE WHEN kind = 'Client' AND ksvc IS NOT NULL AND ksvc <> svc THEN ksvc
                  WHEN kind = 'Client' AND ksvc IS NULL AND callee IN (SELECT svc FROM known) THEN callee
                  ELSE svc END AS svc
      FROM j WHERE err AND NOT coalesce(kerr, false)
    ), origins AS (
      SELECT b, svc, count(*) AS n FROM blamed GROUP BY 1, 2
    )
    SELECT 'cell' AS row_type, b, svc,
           sum(dur) FILTER (WHERE psvc IS NULL OR psvc <> svc) AS entry_ns,
           count(*) FILTER (WHERE psvc IS NULL OR psvc <> svc) AS entries,
           count(*) FILTER (WHERE (psvc IS NULL OR psvc <> svc) AND err) AS entry_errors,
           count(*) FILTER (WHERE pid = '') AS roots,
           0 AS outgoing_ns, 0 AS origins, count(*) AS spans, NULL AS name, NULL AS rid
    FROM j GROUP BY b, svc
    UNION ALL
    -- Sums that may go negative are BIGINT everywhere: ClickHouse has no common type of UInt64 and Int64.
    SELECT 'cell', b, psvc, 0, 0, 0, 0, CAST(sum(least(dur, pdur)) AS BIGINT), 0, 0, NULL, NULL FROM j
    WHERE psvc IS NOT NULL AND psvc <> svc GROUP BY b, psvc
    UNION ALL
    SELECT 'cell', b, svc, 0, 0, 0, 0, 0, n, 0, NULL, NULL FROM origins
    UNION ALL
    -- A failed call that reached no span of the callee (connection refused, a crashed service): the time the
    -- caller lost is the callee's, as if it had answered with an error that slowly.
    SELECT 'cell', b, callee, 0, 0, 0, 0, CAST(sum(dur) AS BIGINT), 0, 0, NULL, NULL FROM j
    WHERE err AND kind = 'Client' AND ksvc IS NULL AND callee <> svc AND callee IN (SELECT svc FROM known)
    GROUP BY b, svc, callee
    UNION ALL
    SELECT 'cell', b, svc, 0, 0, 0, 0, -CAST(sum(dur) AS BIGINT), 0, 0, NULL, NULL FROM j
    WHERE err AND kind = 'Client' AND ksvc IS NULL AND callee <> svc AND callee IN (SELECT svc FROM known)
    GROUP BY b, svc, callee
    UNION ALL
    SELECT 'fail', b, caller, 0, count(*), 0, 0, 0, 0, 0, svc, NULL FROM blamed WHERE svc <> caller
    GROUP BY b, caller, svc
    UNION ALL
    SELECT 'op', b, svc, sum(dur), count(*), count(*) FILTER (WHERE err), 0, 0, 0, 0, name, NULL FROM s
    GROUP BY b, svc, name
    UNION ALL
    -- Row ids in their own column: ClickHouse's are 128-bit (see Dialect.row_id).
    SELECT 'rid', b, svc, 0, 0, 0, 0, 0, 0, 0, NULL, min(rid) FROM s
    WHERE kind = 'Server' OR pid = '' GROUP BY b, svc
    """
    params = [tr.start_ns, step_ns, tr.start_ns, tr.end_ns]
    _, rows = ctx.db.query(sql, params)
    series = StructureSeries(step_ns)
    for row_type, b, svc, entry_ns, entries, entry_errors, roots, outgoing_ns, origins, spans, name, rid in rows:
        bucket = tr.start_ns + int(b) * step_ns
        if row_type == "op":
            # Per operation (span name): calls, total duration, errors; entry_* columns carry them.
            series.operations[(bucket, str(svc), str(name))] = (int(entries), int(entry_ns or 0), int(entry_errors))
        elif row_type == "fail":
            # Calls that failed because of another service (timeouts on it, refused connections).
            series.failed_calls[(bucket, str(svc), str(name))] = int(entries)
        elif row_type == "rid":
            # The first entry span of the service in the bucket (a row id): `versions` reads its resource,
            # a few hundred rows instead of an attribute lookup on every span.
            series.representatives[int(rid)] = (bucket, str(svc))
        else:
            cell = series.cells.setdefault((bucket, str(svc)), Cell())
            cell.add(
                Cell(
                    int(entry_ns or 0), int(outgoing_ns or 0), int(entries), int(entry_errors), int(origins), int(spans)
                )
            )
            series.traces[bucket] = series.traces.get(bucket, 0) + int(roots)
    # Buckets without any root span still exist in time: keep them so change points see the gap.
    for i in range(-(-tr.duration_ns // step_ns)):
        series.traces.setdefault(tr.start_ns + i * step_ns, 0)
    return series


def versions(ctx: ToolContext, series: StructureSeries, services: set[str]) -> dict[str, list[tuple[int, str]]]:
    """service -> [(first bucket seen, service.version)], oldest first, for the given services, read from one
    representative entry span per (bucket, service)."""
    by_service: dict[str, list[tuple[int, int]]] = {}
    for rid, (bucket, svc) in series.representatives.items():
        if svc in services:
            by_service.setdefault(svc, []).append((bucket, rid))
    if not by_service:
        return {}
    # A short IN list on rowid is pruned by row group; a long one turns into a scan and hash join (~0.8 s at
    # 10M spans). So at most MAX_REPRESENTATIVES rows, spread evenly over time per service, first and last kept:
    # enough to see a version change to within a few minutes.
    per_service = max(2, MAX_REPRESENTATIVES // len(by_service))
    representatives: dict[int, tuple[int, str]] = {}
    for svc, rows in by_service.items():
        rows.sort()
        picks = {round(i * (len(rows) - 1) / (per_service - 1)) for i in range(per_service)} if len(rows) > 1 else {0}
        for i in picks:
            bucket, rid = rows[i]
            representatives[rid] = (bucket, svc)
    ver = ctx.dialect.attr('"ResourceAttributes"', "'service.version'")
    # The ids are integers from the store, not user input.
    _, rows = ctx.db.query(ctx.dialect.rows_by_id(ver, list(representatives)))
    first: dict[tuple[str, str], int] = {}
    for rid, v in rows:
        if v is None:
            continue
        bucket, svc = representatives[int(rid)]
        key = (svc, str(v))
        first[key] = min(first.get(key, bucket), bucket)
    out: dict[str, list[tuple[int, str]]] = {}
    for (name, version), seen_at in first.items():
        out.setdefault(name, []).append((seen_at, version))
    for seen in out.values():
        seen.sort()
    return out
