"""`obsmcp validate` and the cross-backend list_services, as a user runs them: the real CLI in a subprocess,
over a store loaded by `obsmcp demo --no-serve`, with a real Prometheus (Debian's package, started on loopback
with a backfilled series for job "hub-ca-auth") and a backend URL where nothing listens."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port, run_cli
from tests.prometheus import PrometheusServer, require_binaries, start_prometheus

pytestmark = pytest.mark.slow

STORE_TOOLS = {
    "list_metrics",
    "query_metrics",
    "search_logs",
    "search_traces",
    "get_trace",
    "find_errors",
    "get_error_details",
}
JSON_KEYS = {"tool", "backend", "status", "duration_ms", "error"}


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory holding ten minutes of the demo system's telemetry, ending now."""
    data = tmp_path_factory.mktemp("validate-demo")
    r = run_cli(
        "demo",
        "--no-serve",
        "--scenario",
        "deploy-errors",
        "--duration",
        "10m",
        "--rate",
        "1",
        "--data-dir",
        str(data),
        "--port",
        str(free_port()),
        "--otlp-port",
        str(free_port()),
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    return data


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    """Prometheus with a queue-depth gauge for job hub-ca-auth every 15 s over the last 50 minutes."""
    now = int(time.time())
    samples = [f'queue_depth{{job="hub-ca-auth"}} {3 + i % 4} {t}' for i, t in enumerate(range(now - 3000, now, 15))]
    server = start_prometheus(
        require_binaries(),
        tmp_path_factory.mktemp("validate-prometheus"),
        [],
        backfill="# TYPE queue_depth gauge\n" + "\n".join(samples) + "\n",
    )
    yield server
    server.stop()


def write_config(path: Path, backends: list[dict[str, str]]) -> Path:
    tables = "".join(
        "[[backends]]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in b.items()) + "\n" for b in backends
    )
    path.write_text(tables)
    return path


def validate_json(*args: str) -> tuple[int, list[dict[str, Any]], str]:
    r = run_cli("validate", "--json", *args)
    return r.returncode, json.loads(r.stdout), r.stderr


def by_backend(checks: list[dict[str, Any]], backend: str) -> dict[str, dict[str, Any]]:
    return {c["tool"]: c for c in checks if c["backend"] == backend}


def test_validate_passes_every_tool_on_the_demo_store(demo_dir: Path) -> None:
    r = run_cli("validate", "--verbose", "--data-dir", str(demo_dir))
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    rows = [ln.split() for ln in lines[1:-1]]
    assert {row[1] for row in rows} == STORE_TOOLS
    assert all(row[0] == "PASS" and row[2] == "store" for row in rows), r.stdout
    assert lines[-1] == "OK: 7 passed, 0 failed, 0 skipped"
    # --verbose shows the start of each answer: get_trace's is the trace search_traces found.
    assert any(row[1] == "get_trace" and "trace" in row[5:] for row in rows), r.stdout

    code, checks, stderr = validate_json("--data-dir", str(demo_dir))
    assert code == 0, stderr
    assert all(set(c) == JSON_KEYS for c in checks), checks
    assert {c["tool"] for c in checks} == STORE_TOOLS
    assert all(c["status"] == "PASS" and c["error"] is None and c["duration_ms"] >= 0 for c in checks)


def test_validate_passes_the_metrics_tools_against_a_real_prometheus(
    demo_dir: Path, prometheus: PrometheusServer, tmp_path: Path
) -> None:
    cfg = write_config(tmp_path / "obsmcp.toml", [{"name": "prom-local", "kind": "prometheus", "url": prometheus.url}])
    code, checks, stderr = validate_json("--config", str(cfg), "--data-dir", str(demo_dir), "--service", "auth")
    assert code == 0, json.dumps(checks, indent=1) + stderr
    prom = by_backend(checks, "prom-local")
    # Prometheus serves metrics only: backend_status plus both metric tools, nothing else.
    assert set(prom) == {"backend_status", "list_metrics", "query_metrics"}
    assert all(c["status"] == "PASS" for c in prom.values()), prom
    # --service auth reached the store's tools too (auth-service there) and they pass; get_error_details
    # needs an error of auth-service: without one it is skipped, saying so (the demo may have none).
    store = by_backend(checks, "store")
    assert {t for t, c in store.items() if c["status"] == "PASS"} >= STORE_TOOLS - {"get_error_details"}
    r = run_cli("tool", "find_errors", "service=auth", "--json", "--data-dir", str(demo_dir))
    if json.loads(r.stdout)["groups"]:
        assert store["get_error_details"]["status"] == "PASS"
    else:
        assert store["get_error_details"]["status"] == "SKIP"
        assert store["get_error_details"]["error"] == "find_errors found nothing to call it with in the last hour"


def test_validate_fails_a_backend_that_refuses_connections_and_still_checks_the_rest(
    demo_dir: Path, tmp_path: Path
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # a port nothing listens on: connections are refused
    cfg = write_config(tmp_path / "obsmcp.toml", [{"name": "prom-down", "kind": "prometheus", "url": dead}])
    r = run_cli("validate", "--config", str(cfg), "--data-dir", str(demo_dir))
    assert r.returncode == 1, r.stdout + r.stderr
    failed = [ln for ln in r.stdout.splitlines() if ln.startswith("FAIL ")]
    assert {ln.split()[1] for ln in failed} == {"backend_status", "list_metrics"}
    for line in failed:
        assert "prom-down" in line.split(None, 3)[2]
        assert f"could not connect to prom-down at {dead}" in line, line
    assert r.stdout.splitlines()[-1].startswith("FAILED: 7 passed, 2 failed, 1 skipped")

    code, checks, _ = validate_json("--config", str(cfg), "--data-dir", str(demo_dir))
    assert code == 1
    down = by_backend(checks, "prom-down")
    assert down["list_metrics"]["status"] == "FAIL" and "could not connect" in down["list_metrics"]["error"]
    assert down["query_metrics"]["status"] == "SKIP"
    assert "list_metrics did not pass" in down["query_metrics"]["error"]
    assert all(c["status"] == "PASS" for c in by_backend(checks, "store").values())


def test_validate_checks_its_own_backends_while_a_server_without_them_owns_the_store(
    server_factory: Any, demo_dir: Path, tmp_path: Path
) -> None:
    # A server started without backends owns the data directory: the store is checked through it, and the
    # backends of validate's own configuration are still called (not skipped because that server lacks them).
    data = tmp_path / "owned"
    shutil.copytree(demo_dir, data)
    server_factory(data_dir=data)
    dead = f"http://127.0.0.1:{free_port()}"
    cfg = write_config(tmp_path / "obsmcp.toml", [{"name": "prom-down", "kind": "prometheus", "url": dead}])
    code, checks, _ = validate_json("--config", str(cfg), "--data-dir", str(data))
    assert code == 1
    assert all(c["status"] == "PASS" for c in by_backend(checks, "store").values())
    down = by_backend(checks, "prom-down")
    assert down["list_metrics"]["status"] == "FAIL" and "could not connect" in down["list_metrics"]["error"]


@pytest.mark.parametrize(
    ("table", "named"),
    [
        ({"name": "prom", "kind": "prometheus"}, "prometheus needs url (e.g. http://localhost:9090)"),
        ({"name": "prom", "kind": "prometheus", "url": "http://127.0.0.1:9", "urls": "x"}, "unknown field 'urls'"),
        (
            {"name": "prom", "kind": "graphite", "url": "http://127.0.0.1:9"},
            "field 'kind': Input should be 'prometheus', 'loki'",
        ),
    ],
)
def test_validate_exits_2_naming_the_key_of_a_bad_backend_table(
    table: dict[str, str], named: str, tmp_path: Path
) -> None:
    cfg = write_config(tmp_path / "obsmcp.toml", [table])
    r = run_cli("validate", "--config", str(cfg), "--data-dir", str(tmp_path / "data"))
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stdout == ""
    assert "backend 'prom' ([[backends]] #1)" in r.stderr and named in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


# -- list_services across backends ---------------------------------------------------------------------


def list_services(cfg: Path, data: Path, *args: str) -> dict[str, Any]:
    r = run_cli("tool", "list_services", *args, "--json", "--config", str(cfg), "--data-dir", str(data))
    assert r.returncode == 0, r.stdout + r.stderr
    result: dict[str, Any] = json.loads(r.stdout)
    return result


def test_list_services_shows_the_prometheus_job_beside_the_store_service_and_resolves_auth_in_both(
    demo_dir: Path, prometheus: PrometheusServer, tmp_path: Path
) -> None:
    cfg = write_config(tmp_path / "obsmcp.toml", [{"name": "prom-local", "kind": "prometheus", "url": prometheus.url}])
    every = list_services(cfg, demo_dir)
    rows = {s["service"]: s for s in every["services"]}
    assert rows["auth-service"]["backends"] == {"prom-local": "hub-ca-auth"}
    assert "hub-ca-auth" not in rows  # grouped under the store's name, not listed twice
    assert rows["frontend"]["backends"] == {}
    assert every["partial"] is False

    one = list_services(cfg, demo_dir, "service=auth")
    assert one["resolved"] == {"store": "auth-service", "prom-local": "hub-ca-auth"}
    assert [s["service"] for s in one["services"]] == ["auth-service"]


def test_list_services_answers_from_the_rest_when_a_backend_is_down(
    demo_dir: Path, prometheus: PrometheusServer, tmp_path: Path
) -> None:
    cfg = write_config(
        tmp_path / "obsmcp.toml",
        [
            {"name": "prom-local", "kind": "prometheus", "url": prometheus.url},
            {"name": "prom-down", "kind": "prometheus", "url": f"http://127.0.0.1:{free_port()}"},
        ],
    )
    r = run_cli("tool", "list_services", "--config", str(cfg), "--data-dir", str(demo_dir))
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert "PARTIAL: a backend did not answer" in lines[0]
    assert any(ln.startswith("prom-down did not answer") and "could not connect to prom-down" in ln for ln in lines)
    auth = next(ln for ln in lines if ln.startswith("auth-service: "))
    assert auth.endswith("| prom-local: hub-ca-auth"), auth


@pytest.mark.parametrize(
    ("name", "known", "expected"),
    [
        ("auth-service", ["hub-ca-auth", "payments"], "hub-ca-auth"),  # through its core, "auth"
        ("checkout", ["checkout-service", "checkout"], "checkout"),  # the exact name wins
        ("auth-service", ["hub-ca-auth", "oauth-proxy"], None),  # "auth" is in both: not grouped with either
        ("db", ["mongodb-exporter"], None),  # a core under 3 characters is too loose to group on
    ],
)
def test_match_service_groups_only_on_one_unambiguous_name(name: str, known: list[str], expected: str | None) -> None:
    from obsmcp.sources.registry import match_service

    assert match_service(name, known) == expected
