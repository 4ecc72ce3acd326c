"""`fleet check` and the registry clients, against real registries on loopback (tests/fleet_index.py): a PEP 503
index with PyPI's JSON API, recorded npm packuments, a real verdaccio, and an official-MCP-registry endpoint."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from obsmcp.fleet import versions
from obsmcp.fleet.check import check_configured, render
from obsmcp.fleet.model import FleetNetworkError, FleetSettings, FleetValidationError
from obsmcp.fleet.registry import mcp_registry_lookup, npm_releases, package_releases, resolve_release
from tests import fleet_index as registries
from tests.fleet_index import PY_PACKAGES, NpmRegistry, PackageIndex

# The loopback registries (pytest fixtures defined in tests/fleet_index.py).
fleet_packages = registries.fleet_packages
fleet_index = registries.fleet_index
npm_registry = registries.npm_registry


def _fleet(index: PackageIndex) -> FleetSettings:
    return FleetSettings(pypi_url=index.url, npm_registry=index.url + "/", mcp_registry=index.url)


# ---- versions ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("newer", "older"),
    [
        ("1.10", "1.9"),
        ("1.0", "1.0rc1"),
        ("1.0.post1", "1.0"),
        ("1.0+local.1", "1.0"),
        ("1!0.1", "2.0"),
        ("2.0.0", "2.0.0.dev3"),
        ("1.0rc2", "1.0b9"),
    ],
)
def test_pep440_orders_versions_as_pip_does(newer: str, older: str) -> None:
    assert versions.is_newer("pypi", newer, older)
    assert not versions.is_newer("pypi", older, newer)
    assert versions.sort_versions("pypi", [newer, older]) == [older, newer]


def test_semver_orders_npm_versions_with_prereleases_below_their_release() -> None:
    assert versions.sort_versions("npm", ["1.10.0", "1.9.0", "1.10.0-rc.1", "not-a-version"]) == [
        "1.9.0",
        "1.10.0-rc.1",
        "1.10.0",
    ]


def test_npm_ranges_follow_npm_rules() -> None:
    published = ["1.2.0", "1.3.5", "1.4.0-beta.1", "2.0.0", "2.1.0-rc.1"]
    assert versions.max_satisfying("npm", published, "^1.2.0") == "1.3.5"  # pre-release of 1.4.0 not picked
    assert versions.max_satisfying("npm", published, "~1.2") == "1.2.0"
    assert versions.max_satisfying("npm", published, "1.x || >=2.0.0 <3") == "2.0.0"
    assert versions.max_satisfying("npm", published, ">=1.4.0-beta.0 <1.5") == "1.4.0-beta.1"
    assert versions.max_satisfying("npm", published, "^3") is None
    assert versions.is_range("npm", "^1.2.0") and not versions.is_range("npm", "1.2.0")


def test_pep440_specifiers_exclude_prereleases_unless_named() -> None:
    assert versions.max_satisfying("pypi", ["1.0", "1.1", "2.0rc1"], ">=1,<3") == "1.1"
    assert versions.max_satisfying("pypi", ["1.0", "2.0rc1"], ">=2.0rc1") == "2.0rc1"


@pytest.mark.parametrize("bad", ["../1.0", "1.0; rm -rf /", "", "1.0 2.0", "$(id)"])
def test_unsafe_or_invalid_versions_are_refused_with_the_expected_form(bad: str) -> None:
    with pytest.raises(FleetValidationError) as e:
        versions.validate("pypi", bad)
    assert "1.2.0" in str(e.value)


# ---- registries ----------------------------------------------------------------------------------------------


def test_pypi_latest_version_and_file_digests_match_the_built_wheels(fleet_index: PackageIndex) -> None:
    release = resolve_release(_fleet(fleet_index), "pypi", "obsmcp-test-echo", None)
    assert release.version == "1.1.0"
    wheel = next(a for a in release.artifacts if a.filename.endswith(".whl"))
    on_disk = fleet_index.file_named("obsmcp-test-echo", "1.1.0").path
    assert wheel.sha256 == hashlib.sha256(on_disk.read_bytes()).hexdigest()
    assert wheel.size == on_disk.stat().st_size
    assert release.published is not None and release.published.year == 2026
    assert {a.filename.rsplit(".", 1)[-1] for a in release.artifacts} == {"whl", "gz"}


def test_pypi_file_urls_relative_to_the_document_are_resolved(fleet_index: PackageIndex) -> None:
    # PyPI mirrors may list files as "../../packages/..." (seen on this machine's PyPI proxy).
    fleet_index.relative_urls = True
    try:
        release = resolve_release(_fleet(fleet_index), "pypi", "obsmcp-test-echo", "1.0.0")
    finally:
        fleet_index.relative_urls = False
    wheel = next(a for a in release.artifacts if a.filename.endswith(".whl"))
    assert wheel.url == f"{fleet_index.url}/files/{wheel.filename}"
    body = httpx.get(wheel.url, timeout=10).content
    assert hashlib.sha256(body).hexdigest() == wheel.sha256


def test_pypi_latest_skips_prereleases_and_yanked_releases(fleet_index: PackageIndex) -> None:
    fleet_index.publish_python(PY_PACKAGES / "echo-1.1.0", "1.2.0rc1")
    fleet_index.publish_python(PY_PACKAGES / "echo-1.1.0", "1.1.0.post1")
    fleet_index.yank("obsmcp-test-echo", "1.1.0.post1", "broken upload")
    found = package_releases(_fleet(fleet_index), "pypi", "obsmcp-test-echo")
    assert [r.version for r in found.releases] == ["1.0.0", "1.1.0", "1.1.0.post1", "1.2.0rc1"]
    assert found.latest() is not None and found.latest().version == "1.1.0"  # type: ignore[union-attr]
    assert found.latest(prereleases=True).version == "1.2.0rc1"  # type: ignore[union-attr]
    yanked = found.get("1.1.0.post1")
    assert yanked is not None and yanked.yanked and yanked.extra["yanked_reason"] == "broken upload"


def test_missing_digest_is_reported_as_none_not_guessed(fleet_index: PackageIndex) -> None:
    wheel = fleet_index.file_named("obsmcp-test-echo", "1.1.0")
    fleet_index.set_digest(wheel.path.name, "missing")
    release = resolve_release(_fleet(fleet_index), "pypi", "obsmcp-test-echo", "1.1.0")
    assert next(a for a in release.artifacts if a.filename == wheel.path.name).sha256 is None


def test_npm_packument_gives_sha512_integrity_of_the_tarball(fleet_index: PackageIndex) -> None:
    release = resolve_release(_fleet(fleet_index), "npm", "@obsmcp-test/echo", "^1.0.0")
    assert release.version == "1.1.0"
    data = fleet_index.file_named("@obsmcp-test/echo", "1.1.0", "npm").path.read_bytes()
    assert release.extra["integrity"] == "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()
    assert release.artifacts[0].url.endswith(".tgz") and release.artifacts[0].sha256 is None


def test_npm_registry_is_read_from_a_real_verdaccio(npm_registry: NpmRegistry, fleet_packages: object) -> None:
    found = npm_releases(FleetSettings(npm_registry=npm_registry.url), "@obsmcp-test/echo")
    assert [r.version for r in found.releases] == ["1.0.0", "1.1.0"]
    assert found.latest_tag == "1.1.0"
    release = found.get("1.0.0")
    assert release is not None
    # The integrity the registry publishes is the tarball's own sha512: download it and compare.
    import urllib.request

    data = urllib.request.urlopen(release.artifacts[0].url, timeout=10).read()
    assert release.extra["integrity"] == "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()
    assert not npm_registry.recorded, "verdaccio did not start: npm ran against recorded documents"


def test_mcp_registry_lists_the_package_with_its_latest_version(fleet_index: PackageIndex) -> None:
    listing = mcp_registry_lookup(_fleet(fleet_index), "npm", "@obsmcp-test/echo")
    assert listing is not None and listing.name == "io.github.obsmcp-test/echo"
    assert listing.version == "1.1.0" and listing.status == "active"
    assert mcp_registry_lookup(_fleet(fleet_index), "pypi", "some-unlisted-package") is None


def test_a_server_deleted_from_the_mcp_registry_is_flagged_by_check(fleet_index: PackageIndex) -> None:
    from obsmcp.fleet.check import check_rows
    from obsmcp.fleet.clients import ListedServer

    fleet_index.mcp_status["io.github.obsmcp-test/obsmcp-test-echo"] = "deleted"
    row = ListedServer(name="echo", kind="pypi", package="obsmcp-test-echo", requested="1.1.0", pinned=True)
    (server,) = check_rows(_fleet(fleet_index), [row]).servers
    assert server.status == "up_to_date"
    assert server.mcp_registry is not None and server.mcp_registry.status == "deleted"
    assert server.note is not None and "marks io.github.obsmcp-test/obsmcp-test-echo as deleted" in server.note


def test_check_output_carries_no_terminal_escapes_from_registry_metadata() -> None:
    from obsmcp.fleet.check import CheckResult, ServerCheck

    evil = ServerCheck(
        name="x", kind="pypi", status="update_available", note="\x1b]0;pwned\x07\x1b[2J see\u202enotes", current="1"
    )
    text = render(CheckResult(checked_at="now", servers=[evil]))
    assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text and "see?notes" in text


def test_unknown_package_is_a_validation_error_naming_it(fleet_index: PackageIndex) -> None:
    with pytest.raises(FleetValidationError, match="no project 'obsmcp-test-nope'"):
        package_releases(_fleet(fleet_index), "pypi", "obsmcp-test-nope")
    with pytest.raises(FleetValidationError, match="not a valid npm package name"):
        package_releases(_fleet(fleet_index), "npm", "../etc/passwd")


def test_registry_errors_say_what_failed_and_what_to_check(fleet_index: PackageIndex) -> None:
    fleet_index.fail_with(500)
    with pytest.raises(FleetNetworkError) as e:
        package_releases(_fleet(fleet_index), "pypi", "obsmcp-test-echo")
    assert "HTTP 500" in str(e.value) and "fleet.pypi_url" in str(e.value)
    closed = FleetSettings(npm_registry="http://127.0.0.1:9/")  # discard port: connection refused
    with pytest.raises(FleetNetworkError, match=r"cannot reach npm .*fleet.npm_registry"):
        npm_releases(closed, "@obsmcp-test/echo")


ODD_DOCS: dict[str, object] = {
    "/pypi/odd-digest/json": {"info": {}, "releases": {"1.0.0": [{"filename": "o-1.0.0.tar.gz", "digests": "x"}]}},
    "/pypi/odd-release/json": {"info": {}, "releases": {"1.0.0": "not a file list"}},
    "/odd-dist": {"versions": {"1.0.0": {"dist": "not an object"}}},
    "/odd-manifest": {"versions": {"1.0.0": ["not", "a", "manifest"]}},
}


def test_odd_registry_documents_are_clear_errors_and_registry_credentials_are_never_shown() -> None:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from threading import Thread

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            doc = ODD_DOCS.get(self.path)
            body = json.dumps(doc).encode()
            self.send_response(200 if doc else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body) if doc else 0))
            self.end_headers()
            if doc:
                self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://user:s3cr3t-t0ken@127.0.0.1:{server.server_address[1]}"
        fleet = FleetSettings(pypi_url=url, npm_registry=url)
        odd = package_releases(fleet, "pypi", "odd-digest")  # a non-object `digests` is no digest, not a crash
        assert odd.releases[0].artifacts[0].sha256 is None
        for kind, name in (("pypi", "odd-release"), ("npm", "odd-dist"), ("npm", "odd-manifest")):
            with pytest.raises(FleetNetworkError, match=f"sent an unexpected document for '{name}'") as e:
                package_releases(fleet, kind, name)  # type: ignore[arg-type]
            assert "s3cr3t" not in str(e.value)
        for kind in ("pypi", "npm"):
            with pytest.raises(FleetValidationError) as missing:
                package_releases(fleet, kind, "nope")  # type: ignore[arg-type]
            assert f"at http://127.0.0.1:{server.server_address[1]} has no" in str(missing.value)
            assert "s3cr3t" not in str(missing.value) and "user" not in str(missing.value)
    finally:
        server.shutdown()
        server.server_close()


# ---- fleet check over the client configs -------------------------------------------------------------------


def _configs(home: Path, project: Path) -> None:
    (home / ".cursor").mkdir(parents=True)
    (home / ".cursor" / "mcp.json").write_text(
        json.dumps(
            {
                "mcpServers": {
                    "echo-py": {"command": "uvx", "args": ["obsmcp-test-echo==1.0.0"]},
                    "echo-npm": {"command": "npx", "args": ["-y", "@obsmcp-test/echo"]},
                    "echo-range": {"command": "npx", "args": ["-y", "@obsmcp-test/echo@~1.0.0"]},
                    "echo-caret": {"command": "npx", "args": ["-y", "@obsmcp-test/echo@^1.0.0"]},
                    "hosted": {"url": "https://mcp.example.com/mcp"},
                }
            }
        )
    )
    project.mkdir()
    (project / ".mcp.json").write_text(
        json.dumps({"mcpServers": {"broken": {"command": "uvx", "args": ["obsmcp-test-broken==1.0.0"]}}})
    )


def test_check_reports_pinned_floating_and_remote_entries(
    fleet_index: PackageIndex, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home, project = tmp_path / "home", tmp_path / "proj"
    _configs(home, project)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    from obsmcp.fleet.model import FleetPaths

    result, _ = check_configured(_fleet(fleet_index), FleetPaths(tmp_path / "fleet"), project=project)
    by_name = {s.name: s for s in result.servers}
    echo = by_name["echo-py"]
    assert (echo.current, echo.latest, echo.status) == ("1.0.0", "1.1.0", "pinned_behind")
    assert [c.version for c in echo.changes] == ["1.1.0"] and echo.changes[0].published.startswith("2026-03-02")
    assert echo.notes_url == "https://example.invalid/obsmcp-test-echo/releases/1.1.0"
    assert echo.mcp_registry is not None and echo.mcp_registry.version == "1.1.0"
    broken = by_name["broken"]
    assert (broken.current, broken.latest, broken.update_available) == ("1.0.0", "2.0.0", True)
    assert by_name["echo-npm"].status == "floating" and by_name["echo-npm"].latest == "1.1.0"
    assert by_name["hosted"].status == "skipped"
    held = by_name["echo-range"]  # ~1.0.0 resolves to 1.0.0 and holds it below 1.1.0
    assert (held.current, held.latest, held.status) == ("1.0.0", "1.1.0", "pinned_behind")
    assert held.note is not None and "range ~1.0.0 resolves to 1.0.0" in held.note
    caret = by_name["echo-caret"]  # ^1.0.0 already takes 1.1.0
    assert (caret.current, caret.status) == ("1.1.0", "up_to_date")
    assert result.updates_available == 3 and result.errors == 0
    text = render(result)
    assert "newer available (pinned)" in text and "release notes: https://example.invalid" in text


def test_check_cli_prints_json_and_exits_1_when_a_registry_fails(fleet_index: PackageIndex, tmp_path: Path) -> None:
    home, project = tmp_path / "home", tmp_path / "proj"
    _configs(home, project)
    env = {
        **os.environ,
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "OBSMCP_FLEET": json.dumps(
            {"pypi_url": fleet_index.url, "npm_registry": fleet_index.url + "/", "mcp_registry": fleet_index.url}
        ),
    }
    cmd = [
        str(Path(sys.executable).parent / "obsmcp"),
        "fleet",
        "check",
        "echo-py",
        "--json",
        "--project",
        str(project),
        "--data-dir",
        str(tmp_path / "data"),
    ]
    ok = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    doc = json.loads(ok.stdout)
    assert [(s["name"], s["latest"], s["status"]) for s in doc["servers"]] == [("echo-py", "1.1.0", "pinned_behind")]
    fleet_index.fail_with(503)
    bad = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=90)
    assert bad.returncode == 1
    assert "HTTP 503" in bad.stdout and "Traceback" not in bad.stderr
    missing = subprocess.run([*cmd[:3], "nope", *cmd[4:]], env=env, capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "no MCP server named 'nope'" in missing.stderr


# ---- the MCP tool ------------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_check_mcp_updates_tool_answers_over_mcp(
    fleet_index: PackageIndex, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import jsonschema
    from mcp import Client

    from obsmcp.config import Settings
    from obsmcp.runtime import Runtime

    home, project = tmp_path / "home", tmp_path / "proj"
    _configs(home, project)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.chdir(project)
    settings = Settings(data_dir=tmp_path / "data", tools=["fleet"], fleet=_fleet(fleet_index))
    rt = Runtime.open(settings, in_memory=True, for_agents=True)
    try:
        async with Client(rt.mcp) as client:
            tools = {t.name: t for t in (await client.list_tools()).tools}
            tool = tools["check_mcp_updates"]
            assert tool.annotations is not None and tool.annotations.read_only_hint is True
            r = await client.call_tool("check_mcp_updates", {"name": "echo-py"})
            assert not r.is_error and r.structured_content is not None
            assert tool.output_schema is not None
            jsonschema.validate(r.structured_content, tool.output_schema)
            (server,) = r.structured_content["servers"]
            assert (server["current"], server["latest"], server["status"]) == ("1.0.0", "1.1.0", "pinned_behind")
            text = r.content[0].text  # type: ignore[union-attr]
            assert "(untrusted data)>>>" in text and "1.0.0 -> 1.1.0 | pinned_behind" in text
            missing = await client.call_tool("check_mcp_updates", {"name": "nope"})
            assert missing.is_error and "no MCP server named 'nope'" in missing.content[0].text  # type: ignore[union-attr]
    finally:
        rt.close()


# ---- the fixture packages themselves ------------------------------------------------------------------------


@pytest.mark.anyio
async def test_fixture_servers_install_from_the_index_and_answer_the_sdk_in_both_eras(
    fleet_index: PackageIndex, tmp_path: Path
) -> None:
    import anyio
    from mcp import Client
    from mcp.client.stdio import StdioServerParameters, stdio_client

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    pip = [sys.executable, "-m", "pip", "--isolated", "--python", str(venv / "bin" / "python"), "install", "-q"]
    index = ["--index-url", fleet_index.simple_url, "--no-cache-dir"]
    subprocess.run([*pip, *index, "obsmcp-test-echo==1.1.0", "obsmcp-test-broken==2.0.0"], check=True, timeout=120)
    for mode in ("auto", "legacy"):
        params = StdioServerParameters(command=str(venv / "bin" / "obsmcp-test-echo"))
        with anyio.fail_after(20):
            async with Client(stdio_client(params), mode=mode) as client:  # type: ignore[arg-type]
                names = [t.name for t in (await client.list_tools()).tools]
                assert names == ["echo", "add", "reverse", "upper"], mode
                r = await client.call_tool("upper", {"text": "hi"})
                assert r.content[0].text == "HI"  # type: ignore[union-attr]
    broken = StdioServerParameters(command=str(venv / "bin" / "obsmcp-test-broken"))
    from mcp.shared.exceptions import MCPError

    with pytest.raises(ExceptionGroup) as failed, anyio.fail_after(20):  # answers garbage, then exits 3
        async with Client(stdio_client(broken), mode="legacy") as client:  # type: ignore[arg-type]
            await client.list_tools()
    assert failed.group_contains(MCPError, match="Connection closed", depth=None)
    # The index refuses nothing by itself; a wrong published digest is caught by pip's own hash check.
    fleet_index.set_digest(fleet_index.file_named("obsmcp-test-echo", "1.0.0").path.name, "wrong")
    bad = subprocess.run([*pip, *index, "obsmcp-test-echo==1.0.0"], capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "THESE PACKAGES DO NOT MATCH THE HASHES" in bad.stderr
