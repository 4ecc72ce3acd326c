"""The status page at `/`, in a real headless Chromium (Debian's `chromium`, driven by Playwright for Python)
against a real `obsmcp serve --http` over demo data with an incident.

Playwright rather than Selenium: one PyPI package talks to Chromium over CDP with our own binary
(executable_path, never `playwright install`), and reports console messages, uncaught page errors, failed
requests and every response status as events, which is what "no console errors, no failed requests" needs;
Selenium would add chromedriver and see only part of that through its logging preferences.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp.client import Client

from tests.conftest import OBSMCP, ServerProcess, clean_env, free_port, otlp_logs_protobuf

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
# Flags from the machine notes: headless as root, no GPU, and nothing that phones home (the network is closed).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TARGET = "payment-service"  # the demo incident's root cause (passed as --target, so the test does not guess)
TOKEN = "status-page-test-token-0123456789"
EVIL_SERVICE = "<img src=x onerror=alert(1)>svc"
EVIL_BODY = "<script>alert(document.domain)</script> login failed password=hunter2-Secret-99 for <b>bob</b>"


def _chromium_or_skip() -> None:
    if not CHROMIUM.is_file():
        pytest.skip(
            f"Chromium is not installed at {CHROMIUM}: run 'sudo bash scripts/install-chromium.sh' "
            "(scripts/test.sh runs it; as root it installs Debian's chromium package)"
        )


@dataclass
class Browser:
    """A Chromium page with everything that went wrong on it recorded."""

    page: Any
    problems: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    def watch(self) -> None:
        p = self.page
        p.on("console", lambda m: self.problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
        p.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        p.on("requestfailed", lambda r: self.problems.append(f"request failed: {r.url} {r.failure}"))
        p.on("response", lambda r: self.problems.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None)
        p.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))

    def goto(self, url: str) -> Any:
        response = self.page.goto(url, wait_until="load")
        self.page.wait_for_load_state("networkidle")
        return response


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """`obsmcp demo --no-serve` (20 minutes of a system with an incident), then `obsmcp serve --http` on it."""
    data = tmp_path_factory.mktemp("status-demo")
    loaded = subprocess.run(
        [
            *(str(OBSMCP), "demo", "--no-serve", "--duration", "20m", "--rate", "2", "--target", TARGET),
            *("--data-dir", str(data), "--port", str(free_port()), "--otlp-port", str(free_port())),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        env=clean_env(),
    )
    assert loaded.returncode == 0, loaded.stdout + loaded.stderr
    logs = tmp_path_factory.mktemp("status-logs")
    srv = ServerProcess(data, logs).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def agent_answers(demo_server: ServerProcess) -> dict[str, str]:
    """What an agent reads over MCP, for the page to be compared with (before any browser runs)."""

    async def fetch() -> dict[str, str]:
        async with Client(demo_server.mcp_url) as client:
            r = await client.call_tool("list_services", {"start": "1h"})
            return {"list_services": r.content[0].text}  # type: ignore[union-attr]

    return anyio.run(fetch)


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    _chromium_or_skip()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def browser(chromium: Any) -> Iterator[Browser]:
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    b = Browser(context.new_page())
    b.watch()
    yield b
    context.close()


def _wait_for_firing_alert(srv: ServerProcess, service: str, timeout_s: float = 90) -> dict[str, Any] | None:
    """The page's JSON until the alert engine reports a firing alert for `service` (None: no engine, or none
    fired in time; the caller says which)."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = httpx.get(srv.base_url + "/api/status", params={"window": "1h"}, timeout=30).json()
        alerts = status["alerts"]["value"] or {}
        if not alerts.get("enabled"):
            return None
        for a in alerts["current"]:
            if a["state"] == "firing" and a["labels"].get("service") == service:
                return dict(a)
        if time.monotonic() > deadline:
            return None
        time.sleep(2)


def _service_lines(text: str) -> dict[str, str]:
    """list_services' rows by service (the header line, with its time range, differs by the second)."""
    return {line.split(":", 1)[0]: line for line in text.splitlines()[2:] if ": " in line}


def test_status_page_shows_services_alert_chart_and_agent_view_without_errors(
    demo_server: ServerProcess, agent_answers: dict[str, str], browser: Browser
) -> None:
    fired = _wait_for_firing_alert(demo_server, TARGET)
    response = browser.goto(demo_server.base_url + "/")
    page = browser.page
    assert response.status == 200 and response.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in response.headers["content-security-policy"]

    # Every service an agent sees, with the same RED figures (same window, data all inside it).
    rows = page.locator("#services tbody tr")
    on_page = {rows.nth(i).get_attribute("data-service"): rows.nth(i) for i in range(rows.count())}
    agent_lines = _service_lines(agent_answers["list_services"])
    assert TARGET in on_page and len(agent_lines) >= 8
    for name, line in agent_lines.items():
        if name.startswith("<img"):
            continue  # the escaping test's service, when it ran first
        cells = on_page[name].locator("td").all_inner_texts()
        rate, errors = cells[0], cells[1]
        assert f"({rate}/s) {errors} err" in line, (name, cells, line)
    p95 = on_page[TARGET].locator("td").nth(3).inner_text()
    assert re.fullmatch(r"[\d.]+(ms|s)", p95), p95

    # The demo incident's firing alert (the alert engine's), naming the root-cause service.
    alerts = page.locator("#alerts")
    if fired is None:
        off = page.locator("#alerting-off").count() == 1
        pytest.fail(
            "no firing alert for the demo incident: "
            + ("this server runs no alert engine (rt.alerts)" if off else f"none fired for {TARGET} within 90 s")
        )
    firing = alerts.locator("tr.alert.firing", has_text=f"service={TARGET}")
    assert firing.count() >= 1, alerts.inner_text()
    assert fired["rule"] in firing.first.inner_text()

    # The affected service's chart: picked from the table like a person would, and the PNG really loaded.
    page.locator(f'#services tr[data-service="{TARGET}"] th a').click()
    page.wait_for_load_state("networkidle")
    assert page.locator("#service h2").inner_text() == TARGET
    chart = page.locator("#red-chart")
    chart.wait_for()
    assert page.evaluate("() => document.getElementById('red-chart').complete")
    assert chart.evaluate("img => img.naturalWidth") > 0
    assert TARGET in page.locator("#errors h2").inner_text()  # errors and patterns now for that service

    # The chart as the agent gets it from render_chart: its text, and the PNG image content shown.
    page.locator("#service a.agent", has_text="chart as agent").click()
    page.wait_for_load_state("networkidle")
    assert page.locator("#tool-text").inner_text().startswith(f"render_chart: RED panel of {TARGET}")
    assert page.locator("img.tool-image").evaluate("img => img.naturalWidth") > 0
    page.go_back()
    page.wait_for_load_state("networkidle")

    # "view as agent" opens the tool's own text answer, the same rows the agent read over MCP.
    page.locator("#services a.agent").click()
    page.wait_for_load_state("networkidle")
    text = page.locator("#tool-text").inner_text()
    assert text.startswith("list_services: ")
    for name, line in agent_lines.items():
        if not name.startswith("<img"):
            assert line in text, (name, line)

    # Error details, from an error group's link: fenced as untrusted data, as over MCP.
    browser.goto(demo_server.base_url + "/")
    page.locator("#errors a.agent", has_text="details").first.click()
    page.wait_for_load_state("networkidle")
    details = page.locator("#tool-text").inner_text()
    assert "(untrusted data)>>>" in details and "get_error_details" in page.locator("h2").inner_text()

    assert browser.problems == []


def test_status_page_fits_a_phone(demo_server: ServerProcess, chromium: Any) -> None:
    context = chromium.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    try:
        b = Browser(context.new_page())
        b.watch()
        b.goto(demo_server.base_url + "/")
        # Nothing wider than the screen: wide tables scroll inside their own box, the chart scales down.
        assert b.page.evaluate("() => document.documentElement.scrollWidth") <= 390
        assert b.page.locator("#red-chart").evaluate("img => img.getBoundingClientRect().width") <= 390
        assert b.page.locator("#red-chart").evaluate("img => img.naturalWidth") > 0
        assert b.problems == []
    finally:
        context.close()


def test_telemetry_text_is_shown_as_text_redacted_and_never_runs(demo_server: ServerProcess, browser: Browser) -> None:
    r = httpx.post(
        demo_server.otlp_url + "/v1/logs",
        content=otlp_logs_protobuf(EVIL_SERVICE, [EVIL_BODY] * 3, severity=17),
        headers={"Content-Type": "application/x-protobuf"},
        timeout=10,
    )
    assert r.status_code == 200
    for url in ("/", "/?" + str(httpx.QueryParams({"service": EVIL_SERVICE}))):
        browser.goto(demo_server.base_url + url)
        page = browser.page
        body = page.locator("main").inner_text()
        assert EVIL_SERVICE in body  # the name, shown literally
        if "service=" in url:  # its error group and log pattern (on the overview they may rank below the top 10)
            assert "<script>alert(document.domain)</script> login failed password=[REDACTED:key-value]" in body, body
        assert "hunter2" not in page.content()
        # Nothing from the telemetry became markup: no element, no script run, no dialog.
        assert page.locator("main script, main img[src='x'], main b").count() == 0
        assert browser.dialogs == []
    browser.goto(demo_server.base_url + "/view/log_patterns?min_severity=error&start=1h")
    text = browser.page.locator("#tool-text").inner_text()
    assert (
        "<script>alert(document.domain)</script>" in text and "[REDACTED:key-value]" in text and "hunter2" not in text
    )
    assert browser.problems == []


def test_programs_still_get_json_and_the_view_serves_read_only_tools_only(demo_server: ServerProcess) -> None:
    base = demo_server.base_url
    index = httpx.get(base + "/", timeout=10)  # Accept: */* (httpx, curl): the JSON index, as before
    assert index.headers["content-type"].startswith("application/json") and "list_services" in index.json()["tools"]
    assert httpx.get(base + "/api/index", headers={"Accept": "text/html"}, timeout=10).json()["name"] == "obsmcp"
    status = httpx.get(base + "/api/status", params={"service": "payment"}, timeout=30).json()
    assert status["service"] == TARGET  # partial names resolve as in the tools
    bad = httpx.get(base + "/", params={"window": "soon"}, headers={"Accept": "text/html"}, timeout=10)
    assert bad.status_code == 400 and "is not a duration" in bad.text
    unknown = httpx.get(base + "/view/drop_everything", timeout=10)
    assert unknown.status_code == 404 and "list_services" in unknown.text  # says which tools it can show
    wrong = httpx.get(base + "/view/find_errors", params={"colour": "red"}, timeout=10)
    assert wrong.status_code == 400 and "'colour' is not an argument of find_errors" in html.unescape(wrong.text)


def test_the_view_runs_only_the_tools_the_page_links_refuses_other_sites_and_is_audited(
    demo_server: ServerProcess,
) -> None:
    base = demo_server.base_url
    for tool in ("create_dashboard", "query_sql"):  # read-only over MCP, but not behind a GET link
        r = httpx.get(base + f"/view/{tool}", params={"name": "x"} if tool == "create_dashboard" else {}, timeout=10)
        served = html.unescape(r.text).split("these are:")[1]
        assert r.status_code == 404 and "list_services" in served and tool not in served, tool
    assert not (demo_server.data_dir / "dashboards" / "x.json").exists()
    for path in ("/view/list_services", "/api/status", "/status/chart?service=x"):
        # What another site's <img src> or link sends: no Origin, but Sec-Fetch-Site: cross-site.
        r = httpx.get(base + path, headers={"Sec-Fetch-Site": "cross-site"}, timeout=10)
        assert r.status_code == 403 and "Sec-Fetch-Site: cross-site" in r.text, path
    same = httpx.get(base + "/view/list_services", params={"start": "1h"}, headers={"Sec-Fetch-Site": "same-origin"})
    assert same.status_code == 200
    audit = [json.loads(line) for line in (demo_server.data_dir / "audit.jsonl").read_text().splitlines()]
    web = [a for a in audit if a["tool"] == "list_services" and a["identity"] == "web:127.0.0.1"]
    assert web and web[-1]["arguments"] == {"start": "1h"} and web[-1]["outcome"] == "ok"


def test_failed_sign_ins_count_against_the_rate_limit(tmp_path: Path) -> None:
    env = {
        "OBSMCP_AUTH_TOKEN": f"tester:{TOKEN}",
        "OBSMCP_RATE_LIMIT_PER_CLIENT": "0.01",
        "OBSMCP_RATE_LIMIT_BURST": "3",
    }
    srv = ServerProcess(tmp_path / "data", tmp_path, env).start()
    try:
        codes = [httpx.post(srv.base_url + "/login", data={"token": f"guess-{i}"}, timeout=10) for i in range(4)]
        assert [r.status_code for r in codes] == [401, 401, 401, 429] and "too many requests" in codes[3].text
        cookie = httpx.get(srv.base_url + "/", headers={"Accept": "text/html"}, cookies={"obsmcp_session": "guess"})
        assert cookie.status_code == 429  # a failed cookie check is limited too
    finally:
        srv.stop()


def test_with_authentication_the_page_needs_a_token(tmp_path: Path, chromium: Any) -> None:
    srv = ServerProcess(tmp_path / "data", tmp_path, {"OBSMCP_AUTH_TOKEN": f"tester:{TOKEN}"}).start()
    try:
        base = srv.base_url
        html_accept = {"Accept": "text/html"}
        for path in ("/", "/api/status", "/view/list_services", "/status/chart?service=x"):
            r = httpx.get(base + path, headers=html_accept, timeout=10)
            assert r.status_code == 401, path
        ok = httpx.get(base + "/", headers={**html_accept, "Authorization": f"Bearer {TOKEN}"}, timeout=10)
        assert ok.status_code == 200 and 'id="services"' in ok.text
        assert httpx.get(base + "/", timeout=10).json()["name"] == "obsmcp"  # the JSON index stays public
        # The sign-in form only ever sends a person back to a path on this server.
        signed = httpx.post(base + "/login", data={"token": TOKEN, "next": "//evil.example/x"}, timeout=10)
        assert signed.status_code == 303 and signed.headers["location"] == "/"

        # A person signs in once with the token; the cookie is HttpOnly and SameSite=Strict.
        context = chromium.new_context()
        try:
            b = Browser(context.new_page())
            b.page.on("console", lambda m: None)
            b.page.goto(base + "/")
            b.page.fill("input[name=token]", "wrong-token-wrong-token")
            b.page.click("form.login button")
            assert "not accepted" in b.page.locator("main").inner_text()
            b.page.fill("input[name=token]", TOKEN)
            b.page.click("form.login button")
            b.page.wait_for_load_state("networkidle")
            assert b.page.locator("#services").count() == 1
            cookie = next(c for c in context.cookies() if c["name"] == "obsmcp_session")
            assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
            b.page.click("form.logout button")
            assert b.page.locator("input[name=token]").count() == 1
        finally:
            context.close()
    finally:
        srv.stop()


def test_install_script_is_idempotent_when_chromium_is_there() -> None:
    _chromium_or_skip()
    script = Path(__file__).resolve().parents[1] / "scripts" / "install-chromium.sh"
    assert shutil.which("bash")
    r = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout == "", r.stdout + r.stderr
