"""`fleet list` and the list_mcp_servers tool: every server configured in every supported client, classified,
grouped across clients, with secrets never shown, and clear errors for broken config files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mcp import Client

from obsmcp.access import CATEGORIES
from obsmcp.config import Settings
from obsmcp.fleet import jsonc
from obsmcp.fleet.clients import MAX_CONFIG_BYTES, classify, discover, listing
from obsmcp.fleet.model import FleetConfigError
from obsmcp.runtime import Runtime
from tests.conftest import run_cli
from tests.fleet_machine import LAYOUT, SECRETS, Machine, machine, make_machine

__all__ = ["machine"]  # the fixture, used by name

EXPECTED = {
    # name: (kind, package, requested as written, pinned, clients)
    "filesystem": ("npm", "@modelcontextprotocol/server-filesystem", "2025.8.21", True, {"claude-desktop", "cursor"}),
    "git": ("pypi", "mcp-server-git", "0.6.2", True, {"claude-desktop", "windsurf"}),
    "sqlite-docker": ("unknown", None, None, False, {"claude-desktop"}),
    "linear": ("remote", None, None, False, {"claude-code"}),
    "fetch": ("pypi", "mcp-server-fetch", None, False, {"claude-code"}),
    "time": ("pypi", "mcp-server-time", "0.6.2", True, {"claude-code", "vscode"}),
    "sentry": ("pypi", "mcp-server-sentry", "0.6.2", True, {"claude-code"}),
    "shared-remote": ("remote", None, None, False, {"claude-code"}),
    "github": ("npm", "@modelcontextprotocol/server-github", "latest", False, {"cursor"}),
    "kubernetes": ("pypi", "mcp-server-kubernetes", None, False, {"cursor"}),
    "memory": ("npm", "@modelcontextprotocol/server-memory", None, False, {"cursor"}),
    "dbhub": ("npm", "@bytebase/dbhub", "0.11.5", True, {"vscode"}),
    "playwright": ("npm", "@playwright/mcp", "0.0.41", True, {"vscode"}),
    "grafana": ("remote", None, None, False, {"vscode"}),
    "context7": ("remote", None, None, False, {"windsurf"}),
    "puppeteer": ("npm", "@modelcontextprotocol/server-puppeteer", None, False, {"windsurf"}),
}


def _no_secrets(text: str) -> None:
    for s in SECRETS:
        assert s not in text, f"secret {s[:8]}... leaked"


def test_every_client_config_is_discovered_and_classified(machine: Machine) -> None:
    d = discover(machine.fleet, machine.project)
    assert d.warnings == []
    assert {str(p) for p in d.files} == {str(machine.config(s)) for s in LAYOUT}
    rows = {s.name: s for s in listing(d, machine.fleet).servers}
    assert set(rows) == set(EXPECTED)
    for name, (kind, package, requested, pinned, clients) in EXPECTED.items():
        row = rows[name]
        assert (row.kind, row.package, row.requested, row.pinned) == (kind, package, requested, pinned), name
        assert {c.client for c in row.clients} == clients, name
        assert row.installed == [] and row.active is None and not row.managed and not row.adopted


def test_the_same_server_in_two_clients_is_listed_once_with_both(machine: Machine) -> None:
    rows = [s for s in listing(discover(machine.fleet, machine.project), machine.fleet).servers if s.name == "git"]
    assert len(rows) == 1
    assert [c.config for c in rows[0].clients] == [
        str(machine.config("claude_desktop_config.json")),
        str(machine.config("windsurf.mcp_config.json")),
    ]


def test_claude_code_project_scoped_servers_come_from_the_user_config(machine: Machine) -> None:
    d = discover(machine.fleet, machine.project)
    time = next(f for f in d.servers if f.entry.name == "time" and f.entry.client == "claude-code")
    assert time.location == ("projects", "/home/user/src/app", "mcpServers", "time")
    assert time.entry.scope == "project" and time.program == "mcp-server-time"
    assert time.server_args == ("--local-timezone=Europe/Paris",)


def test_env_and_header_values_never_appear_only_their_names(machine: Machine) -> None:
    result = listing(discover(machine.fleet, machine.project), machine.fleet)
    dumped = result.model_dump_json()
    _no_secrets(dumped)
    rows = {s.name: s for s in result.servers}
    assert rows["git"].env_keys == ["GITHUB_TOKEN"]
    assert rows["linear"].header_keys == ["Authorization"]
    assert rows["puppeteer"].command is not None and "--api-key [REDACTED]" in rows["puppeteer"].command
    assert rows["context7"].url == "https://mcp.context7.com/mcp?token=[REDACTED]"


@pytest.mark.parametrize(
    ("command", "args", "kind", "package", "requested", "server_args"),
    [
        ("npx", ["-y", "@scope/pkg@1.2.3", "--x"], "npm", "@scope/pkg", "1.2.3", ["--x"]),
        ("npx", ["@scope/pkg@latest"], "npm", "@scope/pkg", None, []),
        ("npx", ["-y", "pkg@^1.2.0"], "npm", "pkg", None, []),
        ("npx.cmd", ["--yes", "--package", "pkg@2.0.0", "pkg-bin", "a"], "npm", "pkg", "2.0.0", ["a"]),
        ("/opt/bin/uvx", ["pkg==1.2", "--db", "x"], "pypi", "pkg", "1.2", ["--db", "x"]),
        ("uvx", ["pkg@1.2"], "pypi", "pkg", "1.2", []),
        ("uvx", ["pkg@latest"], "pypi", "pkg", None, []),
        ("uvx", ["--python", "3.12", "--from", "pkg[cli]==2.0", "pkg-cli", "serve"], "pypi", "pkg", "2.0", ["serve"]),
        ("uvx", ["pkg>=1.0"], "pypi", "pkg", None, []),
        ("uv", ["tool", "run", "pkg==3.1"], "pypi", "pkg", "3.1", []),
        ("pipx", ["run", "--spec", "pkg==0.4", "pkg-server"], "pypi", "pkg", "0.4", []),
        ("python3.12", ["-m", "my_server.main", "--port", "1"], "pypi", "my-server", None, ["--port", "1"]),
        ("docker", ["run", "-i", "img"], "unknown", None, None, ["run", "-i", "img"]),
        ("node", ["/srv/build/index.js"], "unknown", None, None, ["/srv/build/index.js"]),
        ("npx", ["github:owner/repo"], "unknown", None, None, ["github:owner/repo"]),
    ],
)
def test_commands_are_classified_by_how_they_run(
    command: str, args: list[str], kind: str, package: str | None, requested: str | None, server_args: list[str]
) -> None:
    c = classify(command, tuple(args))
    assert (c.kind, c.package, c.requested, list(c.server_args)) == (kind, package, requested, server_args)


def test_a_syntax_error_names_file_line_and_column_and_the_others_still_list(machine: Machine) -> None:
    broken = machine.config("cursor.mcp.json")
    broken.write_text('{\n  "mcpServers": {\n    "a": {"command": "npx" "args": []}\n  }\n}\n')
    d = discover(machine.fleet, machine.project)
    assert len(d.warnings) == 1 and isinstance(d.warnings[0], FleetConfigError)
    message = str(d.warnings[0])
    assert f"{broken}:3:28:" in message and "expected ',' or '}'" in message and "missing comma" in message
    assert "github" not in {f.entry.name for f in d.servers} and "git" in {f.entry.name for f in d.servers}


def test_an_unreadable_config_is_a_warning_and_the_others_still_list(machine: Machine) -> None:
    # A directory where the file should be: unreadable for root too (chmod 0 is not, and CI runs as root).
    cfg = machine.config("windsurf.mcp_config.json")
    cfg.unlink()
    cfg.mkdir()
    d = discover(machine.fleet, machine.project)
    assert any(f"cannot read {cfg}" in str(w) for w in d.warnings)
    assert "filesystem" in {f.entry.name for f in d.servers}


def test_a_huge_config_is_a_warning_not_a_memory_blowup(machine: Machine) -> None:
    cfg = machine.config("claude.json")
    with cfg.open("r+b") as f:
        f.truncate(MAX_CONFIG_BYTES + 1)  # sparse: costs no disk
    d = discover(machine.fleet, machine.project)
    assert [str(w) for w in d.warnings] == [
        f"{cfg} is {MAX_CONFIG_BYTES + 1} bytes, too large for a client config (check the file)"
    ]
    assert "filesystem" in {f.entry.name for f in d.servers}


def test_a_config_that_is_not_utf8_is_a_warning_and_the_others_still_list(machine: Machine) -> None:
    cfg = machine.config("claude_desktop_config.json")
    cfg.write_bytes(b'{"mcpServers": {"caf\xe9": {"command": "npx", "args": ["x"]}}}')
    d = discover(machine.fleet, machine.project)
    assert [str(w) for w in d.warnings] == [
        f"{cfg}: byte 20 is not UTF-8 (save it as UTF-8, the encoding JSON requires)"
    ]
    assert "dbhub" in {f.entry.name for f in d.servers}


def test_vscode_jsonc_errors_point_at_the_mistake(machine: Machine) -> None:
    cfg = machine.config("vscode.user.mcp.json")
    cfg.write_text('// comment\n{\n\t"servers": {\n\t\t"x": {"command": \'npx\'}\n\t}\n}\n')
    (w,) = discover(machine.fleet, machine.project).warnings
    assert f"{cfg}:4:20:" in str(w) and "double quotes" in str(w)


def test_a_non_object_entry_is_reported_and_skipped(machine: Machine) -> None:
    cfg = machine.config("windsurf.mcp_config.json")
    cfg.write_text('{"mcpServers": {"bad": ["npx"], "ok": {"command": "uvx", "args": ["ok-server"]}}}')
    d = discover(machine.fleet, machine.project)
    assert any("'bad' is a JSON array" in str(w) for w in d.warnings)
    assert "ok" in {f.entry.name for f in d.servers}


def test_xdg_config_home_moves_the_claude_desktop_and_vscode_configs(tmp_path: Path) -> None:
    m = make_machine(tmp_path)
    xdg = tmp_path / "xdg"
    (m.home / ".config").rename(xdg)
    env = {"HOME": str(m.home), "XDG_CONFIG_HOME": str(xdg)}
    d = discover(m.fleet, m.project, env)
    assert xdg / "Claude" / "claude_desktop_config.json" in d.files
    assert xdg / "Code" / "User" / "mcp.json" in d.files


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(_JSON, st.sampled_from([None, 0, 2, "\t"]), st.booleans())
def test_the_jsonc_parser_agrees_with_json_and_spans_cover_each_value(
    value: Any, indent: int | str | None, ascii_only: bool
) -> None:
    text = json.dumps(value, indent=indent, ensure_ascii=ascii_only)
    root = jsonc.parse(text)
    assert root.to_python() == value
    stack = [root]
    while stack:  # every node's span is exactly its own JSON text
        node = stack.pop()
        assert json.loads(text[node.start : node.end]) == node.to_python()
        stack.extend(v for _, v in node.members)
        stack.extend(node.items)


def test_jsonc_accepts_comments_and_trailing_commas_and_rejects_what_json_rejects() -> None:
    assert jsonc.parse('// c\n{"a": [1, 2,], /* b */ "b": {"c": "d",},}').to_python() == {"a": [1, 2], "b": {"c": "d"}}
    for bad, where in (("{'a': 1}", "1:2"), ('{"a": 1} x', "1:10"), ('{"a": tru}', "1:7"), ("[1 2]", "1:4"),
                       ('{"a": "b', "1:7"), ("/* open", "1:1"), ("[" * 300, "1:201")):  # fmt: skip
        with pytest.raises(jsonc.JsoncError) as e:
            jsonc.parse(bad)
        assert str(e.value).startswith(where + ":"), (bad, str(e.value))


# -- the command line, as a user runs it -------------------------------------------------------------------------


def _cli(m: Machine, *args: str) -> Any:
    return run_cli("fleet", *args, "--data-dir", str(m.fleet.root.parent), env=m.env, timeout=60)


def test_fleet_list_prints_a_table_and_json(tmp_path: Path) -> None:
    m = make_machine(tmp_path)
    r = _cli(m, "list", "--project", str(m.project))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["NAME", "CLIENTS", "KIND", "PACKAGE", "REQUESTED", "INSTALLED", "ACTIVE", "ADOPTED"]
    fs = next(line for line in lines if line.startswith("filesystem "))
    assert "claude-desktop,cursor(project)" in fs and "2025.8.21 (pinned)" in fs and "not managed" in fs
    assert "latest (floating)" in next(line for line in lines if line.startswith("github "))
    _no_secrets(r.stdout + r.stderr)

    r = _cli(m, "list", "--json", "--project", str(m.project))
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert {s["name"] for s in data["servers"]} == set(EXPECTED)
    _no_secrets(r.stdout)


def test_fleet_list_shows_installed_and_active_versions_from_the_fleet_state(tmp_path: Path) -> None:
    m = make_machine(tmp_path)
    m.manage("git", "pypi", "mcp-server-git", "0.6.2")
    r = _cli(m, "list", "--json", "--project", str(m.project))
    git = next(s for s in json.loads(r.stdout)["servers"] if s["name"] == "git")
    assert git["managed"] and git["active"] == "0.6.2"


def test_a_damaged_fleet_state_is_a_warning_naming_the_file(machine: Machine) -> None:
    machine.manage("git", "pypi", "mcp-server-git")
    machine.fleet.state_file("git").write_text("{not json")
    result = listing(discover(machine.fleet, machine.project), machine.fleet)
    assert any(f"{machine.fleet.state_file('git')} is not a valid fleet state file" in w for w in result.warnings)
    assert "git" in {s.name for s in result.servers}


def test_fleet_list_warns_about_a_broken_config_without_a_traceback(tmp_path: Path) -> None:
    m = make_machine(tmp_path)
    m.config("claude.json").write_text('{"mcpServers": {"x": {"command": "uvx",}}')
    r = _cli(m, "list", "--project", str(m.project))
    assert r.returncode == 0 and "Traceback" not in r.stderr
    assert f"warning: {m.config('claude.json')}:1:42: invalid JSON: expected" in r.stderr
    assert "a closing } or ] is missing" in r.stderr
    assert "filesystem" in r.stdout


# -- the MCP tool ------------------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_list_mcp_servers_tool_answers_over_mcp(machine: Machine, tmp_path: Path) -> None:
    settings = Settings(data_dir=machine.fleet.root.parent, tools=["fleet"])
    rt = Runtime.open(settings, in_memory=True, for_agents=True)
    try:
        async with Client(rt.mcp) as client:
            tools = {t.name: t for t in (await client.list_tools()).tools}
            assert set(tools) == set(CATEGORIES["fleet"]) and "list_mcp_servers" in tools
            assert tools["list_mcp_servers"].annotations is not None
            assert tools["list_mcp_servers"].annotations.read_only_hint is True
            r = await client.call_tool("list_mcp_servers", {})
            assert not r.is_error
            output_schema = tools["list_mcp_servers"].output_schema
            assert output_schema is not None
            jsonschema.validate(r.structured_content, output_schema)  # the published (compacted) schema holds
            text = r.content[0].text  # type: ignore[union-attr]
            assert r.structured_content is not None
            assert {s["name"] for s in r.structured_content["servers"]} == set(EXPECTED)
            assert (
                "(untrusted data)>>>" in text
                and "git | claude-desktop,windsurf | pypi mcp-server-git | 0.6.2 (pinned) | not managed" in text
            )
            _no_secrets(text + json.dumps(r.structured_content))
            one = await client.call_tool("list_mcp_servers", {"name": "dbhub"})
            assert one.structured_content is not None
            assert [s["name"] for s in one.structured_content["servers"]] == ["dbhub"]
            missing = await client.call_tool("list_mcp_servers", {"name": "nope"})
            assert missing.is_error and "no MCP server named 'nope'" in missing.content[0].text  # type: ignore[union-attr]
    finally:
        rt.close()
