"""The resilient HTTP client against real misbehaving HTTP servers on loopback (tests/faulty_backend.py).

Attempts are counted, and their spacing measured, by the server: what reached the backend, not what the
client believes it did. Spacing checks are lower bounds (a slow machine only widens gaps). Policies are
scaled down (tiny backoff, a 0.3 s open interval) so the whole file runs in seconds.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import statistics
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import structlog
from structlog.testing import LogCapture

from obsmcp import metrics
from obsmcp.http import (
    BackendClient,
    BackendClientConfig,
    BackendConnectError,
    BackendHTTPError,
    BackendRateLimited,
    BackendResponseError,
    BackendTimeout,
    BackendUnavailable,
    BreakerPolicy,
    CachePolicy,
    RateLimit,
    RetryPolicy,
    backend_client,
    backend_states,
    close_all,
)
from tests.faulty_backend import FaultyBackend, Reply, retry_after_date, unused_port

pytestmark = pytest.mark.anyio
OPEN_S = 0.3
FAST_RETRY = RetryPolicy(max_attempts=3, backoff_base_s=0.01, backoff_max_s=0.02, max_retry_after_s=5.0)


@pytest.fixture(scope="module", autouse=True)
def _stop_client_loop() -> Iterator[None]:
    yield
    close_all()


@pytest.fixture
def server() -> Iterator[FaultyBackend]:
    with FaultyBackend() as s:
        yield s


MakeClient = Callable[..., BackendClient]


@pytest.fixture
def make_client(server: FaultyBackend) -> Iterator[MakeClient]:
    made: list[BackendClient] = []

    def make(**overrides: Any) -> BackendClient:
        fields: dict[str, Any] = {
            "name": f"test-{uuid.uuid4().hex[:8]}",  # metrics are per backend name: one per test
            "base_url": server.url,
            "read_timeout_s": 5.0,
            "retry": FAST_RETRY,
            "breaker": BreakerPolicy(failure_threshold=5, open_s=OPEN_S),
            "rate_limit": None,
        }
        fields.update(overrides)
        client = backend_client(BackendClientConfig(**fields))
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


@pytest.fixture
def events() -> Iterator[list[dict[str, Any]]]:
    """structlog events as dicts, debug level included, whatever another test configured before."""
    previous = structlog.get_config()
    capture = LogCapture()
    structlog.configure(processors=[capture], wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    try:
        yield capture.entries
    finally:
        structlog.configure(**previous)


def sample(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def named(events: list[dict[str, Any]], event: str, backend: str) -> list[dict[str, Any]]:
    return [e for e in events if e["event"] == event and e.get("backend") == backend]


# -- answers ------------------------------------------------------------------------------------------------


async def test_get_json_returns_the_parsed_answer_and_sends_headers_and_sorted_params(
    server: FaultyBackend, make_client: MakeClient
) -> None:
    server.script("/api/v1/labels", then=Reply(200, {"status": "success", "data": ["job"]}))
    client = make_client(headers={"Authorization": "Bearer t0ken-abc"})
    result = await client.get_json("/api/v1/labels", {"start": 10, "match[]": ["up", "b"], "end": None})
    assert result.data == {"status": "success", "data": ["job"]}
    assert result.status == 200 and result.cached_age_s is None and result.freshness is None
    (seen,) = server.seen("/api/v1/labels")
    assert seen.headers["Authorization"] == "Bearer t0ken-abc"
    assert seen.headers["User-Agent"].startswith("obsmcp/")
    assert seen.query == [("match[]", "up"), ("match[]", "b"), ("start", "10")]  # None dropped, names sorted


async def test_paths_must_stay_on_the_backend(make_client: MakeClient) -> None:
    client = make_client()
    with pytest.raises(ValueError, match="absolute URL"):
        await client.get_json("http://elsewhere.example/steal")
    with pytest.raises(ValueError, match="params="):
        await client.get_json("/api/v1/query?query=up")


async def test_a_redirect_is_reported_not_followed(server: FaultyBackend, make_client: MakeClient) -> None:
    server.script("/moved", then=Reply(302, b"", headers={"Location": "http://other.example/api?key=x"}))
    client = make_client()
    with pytest.raises(BackendHTTPError) as err:
        await client.get_json("/moved")
    assert err.value.status == 302
    assert "redirect to http://other.example/api" in str(err.value) and "key=x" not in str(err.value)
    assert server.count("/moved") == 1


async def test_connections_are_pooled_and_reused(server: FaultyBackend, make_client: MakeClient) -> None:
    client = make_client()
    for i in range(5):
        await client.get_json(f"/q{i}")
    assert len({s.client_port for s in server.seen()}) == 1


async def test_backend_client_returns_the_registered_client_until_its_config_changes(server: FaultyBackend) -> None:
    config = BackendClientConfig(name=f"test-{uuid.uuid4().hex[:8]}", base_url=server.url, kind="loki")
    first = backend_client(config)
    assert backend_client(BackendClientConfig(name=config.name, base_url=server.url, kind="loki")) is first
    with pytest.raises(ValueError, match="already has a client"):
        BackendClient(config)
    second = backend_client(BackendClientConfig(name=config.name, base_url=server.url, read_timeout_s=9))
    assert second is not first
    with pytest.raises(RuntimeError, match="closed"):
        await first.get_json("/q")
    assert (await second.get_json("/q")).status == 200
    assert [s.kind for s in backend_states() if s.name == config.name] == [""]
    second.close()


# -- retries ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 502, 503, 504])
async def test_retryable_statuses_are_retried_until_success(
    status: int, server: FaultyBackend, make_client: MakeClient, events: list[dict[str, Any]]
) -> None:
    server.script("/q", Reply(status, {"error": "busy"}), Reply(status, {"error": "busy"}), then=Reply(200, {"ok": 1}))
    client = make_client()
    result = await client.get_json("/q")
    assert result.data == {"ok": 1}
    assert server.count("/q") == 3
    assert sample("obsmcp_backend_retries_total", backend=client.name, reason=str(status)) == 2
    retries = named(events, "api_retry", client.name)
    assert [(e["attempt"], e["reason"], e["path"]) for e in retries] == [(1, str(status), "/q"), (2, str(status), "/q")]
    assert sample("obsmcp_backend_requests_total", backend=client.name, status=str(status)) == 2


async def test_retries_stop_after_max_attempts_with_the_last_error(
    server: FaultyBackend, make_client: MakeClient
) -> None:
    server.script("/q", then=Reply(503, {"error": "overloaded"}))
    client = make_client()
    with pytest.raises(BackendHTTPError) as err:
        await client.get_json("/q")
    assert server.count("/q") == 3
    assert err.value.status == 503 and "overloaded" in err.value.excerpt
    assert f"{client.name} answered 503 to GET /q" in str(err.value)


async def test_a_connection_reset_before_the_answer_is_retried(server: FaultyBackend, make_client: MakeClient) -> None:
    server.script("/q", Reply(fault="reset"), then=Reply(200, {"ok": 1}))
    client = make_client()
    assert (await client.get_json("/q")).data == {"ok": 1}
    assert server.count("/q") == 2
    assert sample("obsmcp_backend_retries_total", backend=client.name, reason="reset") == 1


async def test_connect_errors_are_retried_and_name_the_backend(make_client: MakeClient) -> None:
    client = make_client(base_url=f"http://127.0.0.1:{unused_port()}")
    with pytest.raises(BackendConnectError) as err:
        await client.get_json("/api/v1/labels")
    assert err.value.reason == "connect"
    assert f"could not connect to {client.name} at http://127.0.0.1:" in str(err.value)
    assert sample("obsmcp_backend_retries_total", backend=client.name, reason="connect") == 2


@pytest.mark.parametrize("status", [400, 404, 500])
async def test_client_errors_and_500_are_not_retried(
    status: int, server: FaultyBackend, make_client: MakeClient
) -> None:
    server.script("/q", then=Reply(status, {"status": "error", "error": "parse error at char 3"}))
    client = make_client()
    with pytest.raises(BackendHTTPError) as err:
        await client.get_json("/q")
    assert server.count("/q") == 1
    assert err.value.status == status and "parse error at char 3" in err.value.excerpt
    assert sample("obsmcp_backend_retries_total", backend=client.name, reason=str(status)) == 0


async def test_a_post_is_retried_only_when_idempotent(server: FaultyBackend, make_client: MakeClient) -> None:
    server.script("/write", then=Reply(503))
    server.script("/query", Reply(503), then=Reply(200, {"ok": 1}))
    client = make_client()
    with pytest.raises(BackendHTTPError):
        await client.post_json("/write", {"rule": "x"}, idempotent=False)
    assert server.count("/write") == 1
    assert (await client.post_json("/query", {"b": 1, "a": 2}, idempotent=True)).data == {"ok": 1}
    assert [s.body for s in server.seen("/query")] == [b'{"a":2,"b":1}'] * 2  # canonical JSON, sent as such
    with pytest.raises(ValueError, match="idempotent"):
        await client.post_json("/write", {}, idempotent=False, cache="query")


async def test_retry_after_in_seconds_is_honored(server: FaultyBackend, make_client: MakeClient) -> None:
    server.script("/q", Reply(429, headers={"Retry-After": "1"}), then=Reply(200, {"ok": 1}))
    client = make_client()
    await client.get_json("/warm")  # a live pooled connection: arrivals are stamped without accept delays
    assert (await client.get_json("/q")).data == {"ok": 1}
    first, second = server.arrivals("/q")
    assert second - first >= 0.7  # 1 s asked; without Retry-After the backoff would be <= 20 ms


async def test_retry_after_as_an_http_date_is_honored(server: FaultyBackend, make_client: MakeClient) -> None:
    client = make_client()
    await client.get_json("/warm")
    server.script("/q", Reply(503, headers={"Retry-After": retry_after_date(2)}), then=Reply(200, {"ok": 1}))
    assert (await client.get_json("/q")).data == {"ok": 1}
    first, second = server.arrivals("/q")
    assert second - first >= 0.6  # the date has whole seconds: "2 s from now" is 1-2 s away


async def test_a_retry_after_beyond_the_cap_is_returned_not_waited_for(
    server: FaultyBackend, make_client: MakeClient
) -> None:
    server.script("/q", then=Reply(429, {"error": "quota"}, headers={"Retry-After": "120"}))
    client = make_client()
    with pytest.raises(BackendRateLimited) as err:
        await client.get_json("/q")
    assert server.count("/q") == 1
    assert err.value.retry_after_s == 120 and err.value.status == 429
    assert f"{client.name} rate-limited obsmcp (429) on GET /q: retry in 120 s" in str(err.value)


async def test_a_429_without_retry_after_waits_for_datadogs_rate_limit_reset(
    server: FaultyBackend, make_client: MakeClient
) -> None:
    # Datadog's 429 carries X-RateLimit-Reset (seconds until the period resets) and no Retry-After.
    client = make_client()
    await client.get_json("/warm")
    server.script("/q", Reply(429, headers={"X-RateLimit-Reset": "1"}), then=Reply(200, {"ok": 1}))
    assert (await client.get_json("/q")).data == {"ok": 1}
    first, second = server.arrivals("/q")
    assert second - first >= 0.7  # 1 s asked; the policy's own backoff would be <= 20 ms
    server.script("/late", then=Reply(429, {"errors": ["Too many requests"]}, headers={"X-RateLimit-Reset": "45"}))
    with pytest.raises(BackendRateLimited) as err:
        await client.get_json("/late")
    assert server.count("/late") == 1  # beyond the 5 s cap: reported, not waited for
    assert err.value.retry_after_s == 45 and "retry in 45 s" in str(err.value)


async def test_a_body_cut_short_is_retried_once(server: FaultyBackend, make_client: MakeClient) -> None:
    big = {"data": ["x" * 50] * 20}
    server.script("/once", Reply(fault="truncate", body=big), then=Reply(200, big))
    server.script("/always", then=Reply(fault="truncate", body=big))
    client = make_client()
    assert (await client.get_json("/once")).data == big
    assert server.count("/once") == 2
    with pytest.raises(BackendResponseError) as err:
        await client.get_json("/always")
    assert err.value.truncated and "truncated body" in str(err.value)
    assert server.count("/always") == 2  # one retry, although max_attempts is 3


async def test_json_that_stops_early_is_called_truncated(server: FaultyBackend, make_client: MakeClient) -> None:
    server.script("/q", then=Reply(fault="close_delimited", body=b'{"status": "success", "data": [1, 2'))
    client = make_client()
    with pytest.raises(BackendResponseError) as err:
        await client.get_json("/q")
    assert err.value.truncated
    assert server.count("/q") == 2


async def test_a_body_that_is_not_json_is_a_clear_error_not_retried(
    server: FaultyBackend, make_client: MakeClient
) -> None:
    page = b"<html><body>Please sign in</body></html>"
    server.script("/q", then=Reply(200, page, headers={"Content-Type": "text/html"}))
    client = make_client(kind="prometheus")
    with pytest.raises(BackendResponseError) as err:
        await client.get_json("/q")
    assert not err.value.truncated and server.count("/q") == 1
    assert "text/html that is not JSON" in str(err.value) and "Please sign in" in str(err.value)
    assert "prometheus API" in str(err.value)


async def test_a_read_timeout_is_reported_and_not_retried(server: FaultyBackend, make_client: MakeClient) -> None:
    server.script("/slow", then=Reply(delay_s=1.0))
    client = make_client(read_timeout_s=0.2)
    with pytest.raises(BackendTimeout) as err:
        await client.get_json("/slow")
    assert err.value.phase == "read" and server.count("/slow") == 1
    assert f"{client.name} did not answer GET /slow within 0.2 s" in str(err.value)


# -- circuit breaker ----------------------------------------------------------------------------------------


async def fail_times(client: BackendClient, n: int, path: str = "/fail") -> None:
    for _ in range(n):
        with pytest.raises(BackendHTTPError):
            await client.get_json(path)


async def test_the_breaker_opens_after_five_consecutive_failures_and_fails_fast(
    server: FaultyBackend, make_client: MakeClient, events: list[dict[str, Any]]
) -> None:
    server.script("/fail", then=Reply(500, {"error": "db down"}))
    client = make_client()
    await fail_times(client, 5)  # a 500 is not retried: five requests, five failures
    assert server.count("/fail") == 5
    with pytest.raises(BackendUnavailable) as err:
        await client.get_json("/other")
    assert server.count() == 5  # the sixth request never left
    assert str(err.value).startswith(f"backend {client.name} unavailable, retry in 1 s")
    assert "db down" in str(err.value) and 0 < err.value.retry_in_s <= OPEN_S
    assert sample("obsmcp_circuit_state", backend=client.name) == 2
    assert sample("obsmcp_circuit_transitions_total", backend=client.name, state="open") == 1
    (change,) = named(events, "circuit_breaker_state_change", client.name)
    assert (change["from_state"], change["to_state"], change["log_level"]) == ("closed", "open", "warning")
    (state,) = [s for s in backend_states() if s.name == client.name]
    assert state.circuit == "open" and state.retry_in_s is not None and state.consecutive_failures == 5


async def test_an_open_circuit_lets_one_probe_through_and_closes_on_success(
    server: FaultyBackend, make_client: MakeClient, events: list[dict[str, Any]]
) -> None:
    server.script("/fail", then=Reply(500))
    client = make_client()
    await fail_times(client, 5)
    await asyncio.sleep(OPEN_S + 0.05)
    server.script("/fail", then=Reply(200, {"ok": 1}))
    assert (await client.get_json("/fail")).data == {"ok": 1}
    assert server.count("/fail") == 6
    assert sample("obsmcp_circuit_state", backend=client.name) == 0
    changes = [(e["from_state"], e["to_state"]) for e in named(events, "circuit_breaker_state_change", client.name)]
    assert changes == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]


async def test_a_failed_probe_opens_the_circuit_again(server: FaultyBackend, make_client: MakeClient) -> None:
    server.script("/fail", then=Reply(500))
    client = make_client()
    await fail_times(client, 5)
    await asyncio.sleep(OPEN_S + 0.05)
    await fail_times(client, 1)  # the probe
    assert server.count("/fail") == 6
    with pytest.raises(BackendUnavailable):
        await client.get_json("/fail")
    assert server.count("/fail") == 6
    assert sample("obsmcp_circuit_state", backend=client.name) == 2


async def test_while_half_open_only_the_probe_reaches_the_backend(
    server: FaultyBackend, make_client: MakeClient
) -> None:
    server.script("/fail", then=Reply(500))
    client = make_client()
    await fail_times(client, 5)
    await asyncio.sleep(OPEN_S + 0.05)
    for i in range(5):
        server.script(f"/p{i}", then=Reply(200, {"ok": i}, delay_s=0.3))
    results = await asyncio.gather(*(client.get_json(f"/p{i}") for i in range(5)), return_exceptions=True)
    answered = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, BackendUnavailable)]
    assert len(answered) == 1 and len(refused) == 4
    assert "a probe request is checking whether it recovered" in str(refused[0])
    assert sum(server.count(f"/p{i}") for i in range(5)) == 1


async def test_timeouts_and_client_errors_do_not_open_the_breaker(
    server: FaultyBackend, make_client: MakeClient
) -> None:
    server.script("/missing", then=Reply(404))
    server.script("/slow", then=Reply(delay_s=0.6))
    client = make_client(read_timeout_s=0.1)
    await fail_times(client, 6, "/missing")
    for _ in range(6):
        with pytest.raises(BackendTimeout):
            await client.get_json("/slow")
    assert client.state().circuit == "closed"
    assert server.count("/missing") == 6 and server.count("/slow") == 6


async def test_neutral_answers_do_not_reset_the_run_of_failures(server: FaultyBackend, make_client: MakeClient) -> None:
    server.script("/fail", then=Reply(500))
    server.script("/missing", then=Reply(404))
    client = make_client()
    await fail_times(client, 4)
    await fail_times(client, 1, "/missing")
    assert client.state().circuit == "closed"
    await fail_times(client, 1)
    assert client.state().circuit == "open"


# -- cache, single-flight, rate limit ----------------------------------------------------------------------


async def test_a_cache_hit_says_how_old_it_is_and_sends_nothing(
    server: FaultyBackend, make_client: MakeClient, events: list[dict[str, Any]]
) -> None:
    server.script("/api/v1/labels", then=Reply(200, {"data": ["job"]}))
    client = make_client()
    first = await client.get_json("/api/v1/labels", cache="metadata")
    second = await client.get_json("/api/v1/labels", cache="metadata")
    assert server.count("/api/v1/labels") == 1
    assert first.cached_age_s is None and second.data == first.data
    assert second.cached_age_s is not None and second.cached_age_s >= 0
    assert second.freshness == "cached, 0 s old"
    assert sample("obsmcp_cache_hits_total", backend=client.name) == 1
    assert sample("obsmcp_cache_misses_total", backend=client.name) == 1
    assert len(named(events, "cache_hit", client.name)) == 1 and len(named(events, "cache_miss", client.name)) == 1


async def test_response_headers_reach_the_source_also_from_the_cache(
    server: FaultyBackend, make_client: MakeClient
) -> None:
    link = '<https://sentry.io/api/0/x/?cursor=0:100:0>; rel="next"; results="true"; cursor="0:100:0"'
    server.script("/page", then=Reply(200, {"data": []}, headers={"Link": link, "X-Hits": "250", "Set-Cookie": "s=1"}))
    client = make_client()
    fresh = await client.get_json("/page", cache="query")
    cached = await client.get_json("/page", cache="query")
    for result in (fresh, cached):
        assert result.headers["link"] == link and result.headers["x-hits"] == "250"
        assert "set-cookie" not in result.headers
    assert cached.cached_age_s is not None and server.count("/page") == 1


async def test_cached_answers_expire_after_their_ttl(server: FaultyBackend, make_client: MakeClient) -> None:
    client = make_client(cache=CachePolicy(query_ttl_s=0.5, metadata_ttl_s=60))
    await client.get_json("/q", cache="query")
    await client.get_json("/q", cache="query")
    assert server.count("/q") == 1
    await asyncio.sleep(0.6)
    assert (await client.get_json("/q", cache="query")).cached_age_s is None
    assert server.count("/q") == 2
    await client.get_json("/q")  # cache=None always asks the backend
    assert server.count("/q") == 3


async def test_fingerprints_ignore_spelling_but_separate_identities(
    server: FaultyBackend, make_client: MakeClient
) -> None:
    client = make_client(headers={"Authorization": "Bearer tenant-a-token"})
    await client.get_json("/q", {"b": "1", "a": ["x", "y"]}, cache="metadata")
    await client.get_json("q", [("a", "x"), ("b", 1), ("a", "y")], cache="metadata")
    await client.post_json("/p", {"x": 1, "y": [1, 2]}, idempotent=True, cache="query")
    await client.post_json("/p", {"y": [1, 2], "x": 1}, idempotent=True, cache="query")
    assert server.count("/q") == 1 and server.count("/p") == 1
    await client.get_json("/q", {"b": "1", "a": ["y", "x"]}, cache="metadata")  # value order kept: another query
    await client.get_json("/q", {"b": "1", "a": ["x", "y"]}, cache="metadata", headers={"X-Scope-OrgID": "team-b"})
    await client.get_json("/q", {"b": "1", "a": ["x", "y"]}, cache="metadata", headers={"Authorization": "Bearer b"})
    assert server.count("/q") == 4
    assert [s.headers.get("X-Scope-OrgID") for s in server.seen("/q")] == [None, None, "team-b", None]


async def test_twenty_identical_concurrent_requests_make_one(server: FaultyBackend, make_client: MakeClient) -> None:
    server.script("/api/v1/query", then=Reply(200, {"data": {"result": [1]}}, delay_s=0.5))
    client = make_client()
    results = await asyncio.gather(*(client.get_json("/api/v1/query", {"query": "up"}) for _ in range(20)))
    assert server.count("/api/v1/query") == 1
    assert all(r.data == {"data": {"result": [1]}} for r in results)


async def test_requests_from_other_threads_and_event_loops_share_one_flight(
    server: FaultyBackend, make_client: MakeClient
) -> None:
    server.script("/q", then=Reply(200, {"ok": 1}, delay_s=1.0))
    client = make_client()
    barrier = threading.Barrier(4)
    answers: list[Any] = []

    def worker() -> None:
        barrier.wait()
        answers.append(asyncio.run(client.get_json("/q")).data)  # each thread runs its own event loop

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert answers == [{"ok": 1}] * 4
    assert server.count("/q") == 1


async def test_the_token_bucket_spaces_requests(server: FaultyBackend, make_client: MakeClient) -> None:
    client = make_client(rate_limit=RateLimit(per_s=10, burst=1))
    await client.get_json("/warm")  # opens the pooled connection: the server stamps arrivals on a live handler
    await asyncio.sleep(0.15)  # the bucket refills
    await asyncio.gather(*(client.get_json(f"/r{i}") for i in range(5)))
    arrivals = sorted(s.at for s in server.seen() if s.path != "/warm")
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    # 10 per second: 100 ms apart, 400 ms from first to last. The median and the span (not the smallest gap)
    # because a loaded machine may stamp one arrival late, which shortens the gap after it.
    assert len(arrivals) == 5 and statistics.median(gaps) >= 0.08 and arrivals[-1] - arrivals[0] >= 0.3
    assert sample("obsmcp_backend_throttled_total", backend=client.name) >= 4


# -- secrets and state ------------------------------------------------------------------------------------


async def test_no_credential_appears_in_logs_errors_or_state(
    server: FaultyBackend, make_client: MakeClient, events: list[dict[str, Any]]
) -> None:
    token, dd_key, param_key = "s3cr3t-bearer-token", "dd-api-key-0123456789", "param-key-9876"
    server.script("/403", then=Reply(403, {"errors": [f"token Bearer {token} lacks scope; key {dd_key}"]}))
    server.script("/html", then=Reply(200, f"<p>{param_key}</p>".encode(), headers={"Content-Type": "text/html"}))
    server.script("/fail", then=Reply(503, {"error": f"upstream said {token}"}))
    client = make_client(headers={"Authorization": f"Bearer {token}", "DD-API-KEY": dd_key})
    texts: list[str] = []
    for path, params in (("/403", None), ("/html", {"api_key": param_key}), ("/fail", {"api_key": param_key})):
        with pytest.raises((BackendHTTPError, BackendResponseError)) as err:
            await client.get_json(path, params)
        texts += [str(err.value), repr(err.value), getattr(err.value, "excerpt", "")]
    await fail_times(client, 1)  # 3 + 3 attempts of /fail: the circuit is open now
    with pytest.raises(BackendUnavailable) as unavailable:
        await client.get_json("/fail")
    texts += [str(unavailable.value), repr(client), repr(client.config), repr(backend_states())]
    texts += [repr(e) for e in events]
    assert server.seen("/403")[0].headers["DD-API-KEY"] == dd_key  # sent, as a header
    assert "[REDACTED]" in texts[0]
    for secret in (token, dd_key, param_key):
        assert not [t for t in texts if secret in t]


async def test_backend_states_report_latency_and_error_rate(server: FaultyBackend, make_client: MakeClient) -> None:
    server.script("/bad", then=Reply(500))
    client = make_client(kind="prometheus")
    for _ in range(3):
        await client.get_json("/ok")
    await fail_times(client, 1, "/bad")
    (state,) = [s for s in backend_states() if s.name == client.name]
    assert (state.kind, state.base_url, state.circuit) == ("prometheus", server.url, "closed")
    assert state.recent_requests == 4 and state.error_rate == 0.25
    assert state.p50_ms is not None and state.p95_ms is not None and state.p95_ms >= state.p50_ms
    client.close()
    assert client.name not in [s.name for s in backend_states()]
