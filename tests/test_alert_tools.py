"""The alert tools and the firing-alerts resource through the real MCP SDK client: reading alerts and rules,
write tools refused without --enable-writes and working with it, rules that cannot evaluate refused with the
reason, config rules protected, silences, and resource-updated notifications in both protocol eras."""

from __future__ import annotations

import json
import random
import time
import warnings
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.types import ServerNotification

from obsmcp.alerting.notify import WebhookConfig, WebhookNotifier
from obsmcp.alerting.push import FIRING_URI
from obsmcp.config import Settings
from obsmcp.runtime import Runtime
from tests import alertmanager as am
from tests.alertmanager import WebhookReceiver
from tests.conftest import call_tool, call_tool_error
from tests.factories import logs_request, traces_request
from tests.test_alerting import ERROR_RATE_RULE, Clock, requests

webhook_receiver_factory = am.webhook_receiver_factory  # the fixture, used by name below
S = 1_000_000_000
WRITE_TOOLS = {"create_alert_rule", "update_alert_rule", "delete_alert_rule", "silence_alert"}
CONFIG_RULE = {**ERROR_RATE_RULE, "for": "0s"}


def runtime(tmp_path: Path, **settings: Any) -> Runtime:
    return Runtime.open(
        Settings(data_dir=tmp_path, alert_default_rules=False, alerts=[CONFIG_RULE], **settings), in_memory=True
    )


async def failing_checkout(rt: Runtime) -> None:
    spans = requests(random.Random(1), time.time_ns() - 120 * S, 40, 3, errors=10)
    await rt.receiver.ingest("traces", traces_request({"checkout-service": spans}), "protobuf")


@pytest.fixture
async def writable(tmp_path: Path) -> AsyncIterator[Runtime]:
    rt = runtime(tmp_path, enable_writes=True)
    yield rt
    rt.close()


@pytest.mark.anyio
async def test_list_alerts_says_no_alerts_and_which_rules_evaluate(tmp_path: Path) -> None:
    rt = runtime(tmp_path)
    try:
        async with Client(rt.mcp) as client:
            r = await call_tool(client, "list_alerts")
            text = r.content[0].text
            assert "no alerts: nothing is firing or pending" in text and "checkout-errors" in text
            assert r.structured_content["rules_evaluating"] == 1 and r.structured_content["alerts"] == []
            assert r.structured_content["last_evaluated"] is not None  # evaluated on demand, no loop running

            await failing_checkout(rt)
            rt.alerts.evaluate_now()
            r = await call_tool(client, "list_alerts")
            (alert,) = r.structured_content["alerts"]
            assert alert["state"] == "firing" and alert["labels"]["service"] == "checkout-service"
            assert alert["value"] == pytest.approx(0.25) and alert["since"].endswith("Z")
            assert "FIRING critical checkout-errors for " in r.content[0].text
            assert "checkout-service error rate 25% > 5% over 5m" in r.content[0].text

            rules = await call_tool(client, "list_alert_rules")
            (rule,) = rules.structured_content["rules"]
            assert rule["source"] == "config" and rule["firing"] == 1
            assert "checkout-service error_rate over 5m > 0.05" in rules.content[0].text
    finally:
        rt.close()


@pytest.mark.anyio
async def test_write_tools_are_not_served_without_enable_writes(tmp_path: Path) -> None:
    rt = runtime(tmp_path)
    try:
        async with Client(rt.mcp) as client:
            names = {t.name for t in (await client.list_tools()).tools}
            assert {"list_alerts", "list_alert_rules"} <= names and not WRITE_TOOLS & names
            error = await call_tool_error(client, "create_alert_rule", {"rule": {"name": "x"}})
            assert "create_alert_rule" in error
    finally:
        rt.close()


@pytest.mark.anyio
async def test_write_tools_create_update_silence_and_delete_rules(writable: Runtime) -> None:
    async with Client(writable.mcp) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert set(tools) >= WRITE_TOOLS
        hints = {n: tools[n].annotations for n in WRITE_TOOLS}
        assert all(h is not None and h.read_only_hint is False for h in hints.values())
        assert getattr(hints["delete_alert_rule"], "destructive_hint", None) is True
        await failing_checkout(writable)

        rule = {"name": "checkout-slow", "kind": "threshold", "service": "checkout", "signal": "latency_p95"}
        created = await call_tool(client, "create_alert_rule", {"rule": {**rule, "threshold": 5}})
        assert "dry run: holds now for {'service': 'checkout-service'}" in created.content[0].text
        listed = await call_tool(client, "list_alert_rules")
        assert {r["name"]: r["source"] for r in listed.structured_content["rules"]} == {
            "checkout-errors": "config",
            "checkout-slow": "api",
        }
        updated = await call_tool(
            client, "update_alert_rule", {"name": "checkout-slow", "changes": {"threshold": 5000}}
        )
        assert "does not hold now" in updated.content[0].text
        assert updated.structured_content["rule"]["threshold"] == 5000

        writable.alerts.evaluate_now()
        silenced = await call_tool(
            client,
            "silence_alert",
            {"duration": "1h", "matchers": {"service": "checkout-service"}, "comment": "deploy"},
        )
        assert silenced.structured_content["muted_now"] == 1
        alerts = await call_tool(client, "list_alerts")
        assert f"SILENCED by {silenced.structured_content['id']}" in alerts.content[0].text

        deleted = await call_tool(client, "delete_alert_rule", {"name": "checkout-slow"})
        assert "deleted: checkout-slow" in deleted.content[0].text
        assert [r.name for r in writable.alerts.rules()] == ["checkout-errors"]


@pytest.mark.parametrize(
    ("tool", "args", "expected"),
    [
        ("create_alert_rule", {"rule": {"name": "q", "kind": "threshold", "metric": "nope", "threshold": 1}},
         "the rule does not evaluate: no metric named 'nope'"),
        ("create_alert_rule", {"rule": {"name": "q", "kind": "threshold", "signal": "error_rate"}},
         "needs threshold = <number>"),
        ("create_alert_rule", {"rule": {"name": "q", "kind": "burn_rate", "slo": "no-such-slo"}},
         "names no SLO"),
        ("create_alert_rule", {"rule": {"name": "checkout-errors", "kind": "log_rate", "threshold": 1}},
         "defined in the config file"),
        ("update_alert_rule", {"name": "checkout-errors", "changes": {"threshold": 1}}, "tools cannot change it"),
        ("delete_alert_rule", {"name": "checkout-errors"}, "tools cannot change it"),
        ("delete_alert_rule", {"name": "ghost"}, "no rule made by a tool is named 'ghost'"),
        ("silence_alert", {"duration": "1h"}, "say what to silence"),
        ("silence_alert", {"duration": "soon", "rule": "checkout-errors"}, "is not a duration"),
    ],
)  # fmt: skip
@pytest.mark.anyio
async def test_invalid_requests_are_refused_with_the_reason(
    writable: Runtime, tool: str, args: dict[str, Any], expected: str
) -> None:
    async with Client(writable.mcp) as client:
        error = await call_tool_error(client, tool, args)
        assert expected in error


@pytest.mark.anyio
async def test_firing_resource_notifies_listen_subscribers_on_change(tmp_path: Path) -> None:
    """2026-07-28: subscriptions/listen naming the resource; an alert starting and stopping to fire each sends
    notifications/resources/updated, and reading the resource gives the firing alerts."""
    rt = runtime(tmp_path)
    try:
        async with Client(rt.mcp) as client, client.listen(resource_subscriptions=[FIRING_URI]) as sub:
            assert sub.honored.resource_subscriptions == [FIRING_URI]
            await failing_checkout(rt)
            await anyio.to_thread.run_sync(rt.alerts.evaluate_now)
            with anyio.fail_after(10):
                event = await sub.__anext__()
            assert getattr(event, "uri", None) == FIRING_URI
            contents = (await client.read_resource(FIRING_URI)).contents
            (firing,) = json.loads(getattr(contents[0], "text", ""))
            assert firing["rule"] == "checkout-errors" and firing["state"] == "firing"

            clock = Clock()
            clock.offset = 900
            rt.alerts.clock = clock
            await anyio.to_thread.run_sync(rt.alerts.evaluate_now)  # resolved
            with anyio.fail_after(10):
                event = await sub.__anext__()
            assert getattr(event, "uri", None) == FIRING_URI
            contents = (await client.read_resource(FIRING_URI)).contents
            assert json.loads(getattr(contents[0], "text", "")) == []
    finally:
        rt.close()


@pytest.mark.anyio
async def test_firing_resource_notifies_resources_subscribe_on_the_handshake_era(tmp_path: Path) -> None:
    rt = runtime(tmp_path)
    updated: list[str] = []

    async def on_message(message: Any) -> None:
        if isinstance(message, ServerNotification) and message.method == "notifications/resources/updated":
            updated.append(str(message.params.uri))

    try:
        async with Client(rt.mcp, mode="legacy", message_handler=on_message) as client:
            caps = client.session.server_capabilities
            assert caps is not None and caps.resources is not None and caps.resources.subscribe is True
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # resources/subscribe is deprecated by the 2026-07-28 protocol
                await client.subscribe_resource(FIRING_URI)
            await failing_checkout(rt)
            await anyio.to_thread.run_sync(rt.alerts.evaluate_now)
            with anyio.fail_after(10):
                while not updated:
                    await anyio.sleep(0.05)
            assert updated == [FIRING_URI]
    finally:
        rt.close()


@pytest.mark.parametrize("mode", ["auto", "legacy"])
@pytest.mark.anyio
async def test_the_serve_loop_pushes_firing_alerts_over_streamable_http(tmp_path: Path, mode: str) -> None:
    """`serve`'s background loop (every second here) finds the alert by itself; an HTTP client subscribed in
    either era gets notifications/resources/updated."""
    from mcp.client.streamable_http import streamable_http_client

    from obsmcp.runtime import running

    rt = runtime(tmp_path, port=0, otlp_port=0, ingest_decode_processes=0, alert_interval="1s")
    updated: list[str] = []

    async def on_message(message: Any) -> None:
        if isinstance(message, ServerNotification) and message.method == "notifications/resources/updated":
            updated.append(str(message.params.uri))

    try:
        async with running(rt, mcp_http=True, strict_ports=True):
            url = rt.endpoints["mcp_url"]
            async with Client(streamable_http_client(url), mode=mode, message_handler=on_message) as client:
                if mode == "legacy":
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        await client.subscribe_resource(FIRING_URI)
                    await failing_checkout(rt)
                    with anyio.fail_after(15):
                        while not updated:
                            await anyio.sleep(0.05)
                else:
                    async with client.listen(resource_subscriptions=[FIRING_URI]) as sub:
                        await failing_checkout(rt)
                        with anyio.fail_after(15):
                            event = await sub.__anext__()
                        updated.append(str(getattr(event, "uri", "")))
                assert updated[0] == FIRING_URI
                r = await call_tool(client, "list_alerts")
                assert r.structured_content["alerts"][0]["rule"] == "checkout-errors"
    finally:
        rt.close()


SECRET_LOG = "login failed password=hunter2secret for key AKIAIOSFODNN7EXAMPLE"


@pytest.mark.anyio
async def test_a_secret_in_an_alert_cause_is_redacted_in_the_tool_the_resource_and_the_webhook(
    tmp_path: Path, webhook_receiver_factory: Callable[..., WebhookReceiver]
) -> None:
    rule = {"name": "new-errors", "kind": "log_pattern", "window": "5m", "baseline": "1h", "min_count": 3}
    rt = Runtime.open(Settings(data_dir=tmp_path, alert_default_rules=False, alerts=[rule]), in_memory=True)
    sink = webhook_receiver_factory()
    hook = WebhookNotifier(
        WebhookConfig.model_validate({"name": "t", "url": f"{sink.url}/hook", "format": "alertmanager"})
    )
    try:
        rt.alerts.add_notifier(hook)
        now = time.time_ns()
        old = [(now - (40 - i) * 60 * S, 17, f"payment declined for order {i}", b"") for i in range(30)]
        records = old + [(now - (120 - 20 * i) * S, 17, SECRET_LOG, b"") for i in range(6)]
        await rt.receiver.ingest("logs", logs_request("checkout-service", records), "protobuf")
        await anyio.to_thread.run_sync(rt.alerts.evaluate_now)
        assert hook.flush(10), (rt.alerts.current(), rt.alerts.errors())
        async with Client(rt.mcp) as client:
            listed = await call_tool(client, "list_alerts")
            contents = (await client.read_resource(FIRING_URI)).contents
            resource = getattr(contents[0], "text", "")
        webhook = json.dumps(sink.wait(1, timeout=15)[0].body)
        (alert,) = listed.structured_content["alerts"]
        assert "login failed" in alert["cause"] and "login failed" in resource and "login failed" in webhook
        for seen in (listed.content[0].text, json.dumps(alert), resource, webhook):
            assert "hunter2secret" not in seen and "AKIAIOSFODNN7EXAMPLE" not in seen
            assert "[REDACTED:" in seen
    finally:
        hook.close()
        rt.close()


@pytest.mark.anyio
async def test_a_rule_whose_service_matches_several_is_refused_by_the_dry_run(writable: Runtime) -> None:
    spans = requests(random.Random(2), time.time_ns() - 120 * S, 10, 3, errors=0)
    await writable.receiver.ingest(
        "traces", traces_request({"checkout-cart": spans, "checkout-payments": spans}), "protobuf"
    )
    rule = {"name": "ambiguous", "kind": "threshold", "service": "checkout", "signal": "error_rate", "threshold": 1}
    async with Client(writable.mcp) as client:
        error = await call_tool_error(client, "create_alert_rule", {"rule": rule})
    assert "service:" in error and "checkout-cart" in error and "checkout-payments" in error


@pytest.mark.parametrize(
    ("tool", "args", "expected"),
    [
        ("silence_alert", {"duration": "3000000d", "rule": "checkout-errors"}, "a silence lasts at most 90d"),
        ("create_alert_rule", {"rule": {"name": "q", "kind": "log_rate", "threshold": 1, "window": "3000000d"}},
         "'3000000d' is too long: at most 90d"),
        ("create_alert_rule", {"rule": {"name": "q", "kind": "log_rate", "threshold": 1, "for": "100d"}},
         "'100d' is too long: at most 90d"),
    ],
)  # fmt: skip
@pytest.mark.anyio
async def test_overlong_durations_are_refused_with_the_limit(
    writable: Runtime, tool: str, args: dict[str, Any], expected: str
) -> None:
    async with Client(writable.mcp) as client:
        error = await call_tool_error(client, tool, args)
    assert expected in error and "internal error" not in error
