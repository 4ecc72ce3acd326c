"""The in-process demo loader stores what the generator produced, incident included."""

from __future__ import annotations

from typing import Any


def test_demo_store_holds_generated_telemetry_with_the_incident(demo_store: Any) -> None:
    store = demo_store("deploy-errors")
    _, rows = store.ctx.db.query("SELECT count(*) FROM otel_traces")
    assert rows[0][0] == store.counts["traces"] > 10_000
    _, rows = store.ctx.db.query("SELECT count(*) FROM otel_logs")
    assert rows[0][0] == store.counts["logs"] > 10_000
    # The deploy's errors are in the root-cause service, inside the incident window only.
    _, rows = store.ctx.db.query(
        'SELECT count(*) FROM otel_traces WHERE "ServiceName" = ? AND "StatusCode" = \'Error\' '
        'AND "Timestamp" >= make_timestamp_ns(?)',
        [store.truth.root_cause_service, store.truth.start_ns],
    )
    assert rows[0][0] > 50
