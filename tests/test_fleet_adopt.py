"""`fleet adopt` / `fleet restore`: a client entry switched to obsmcp's launcher and back, byte for byte, in every
supported client's config, with every other byte of the file left alone."""

from __future__ import annotations

import json
import shutil
import stat
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

from obsmcp.fleet import audit, jsonc
from obsmcp.fleet.adopt import adopt, adoptions, edit_entry, restore, revert_entry
from obsmcp.fleet.clients import discover, listing, locate
from obsmcp.fleet.model import FleetConfigError, FleetError, FleetSettings, FleetValidationError, PackageKind
from tests.conftest import free_port, run_cli
from tests.fleet_index import PackageIndex, fleet_index, fleet_packages
from tests.fleet_machine import LAYOUT, Machine, machine, make_machine

__all__ = ["fleet_index", "fleet_packages", "machine"]  # fixtures, used by name

# (sample, client, server, kind, package, the args the launcher gets)
CASES = [
    ("claude_desktop_config.json", "claude-desktop", "git", "pypi", "mcp-server-git",
     ["--repository", "/home/user/src/app"]),
    ("claude_desktop_config.json", "claude-desktop", "filesystem", "npm", "@modelcontextprotocol/server-filesystem",
     ["/home/user/Desktop", "/home/user/Downloads"]),
    ("claude.json", "claude-code", "fetch", "pypi", "mcp-server-fetch", []),
    ("claude.json", "claude-code", "time", "pypi", "mcp-server-time", ["--local-timezone=Europe/Paris"]),
    ("project.mcp.json", "claude-code", "sentry", "pypi", "mcp-server-sentry",
     ["--auth-token", "sntryu_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd"]),
    ("cursor.mcp.json", "cursor", "github", "npm", "@modelcontextprotocol/server-github", []),
    ("cursor.mcp.json", "cursor", "kubernetes", "pypi", "mcp-server-kubernetes", ["--context", "prod"]),
    ("cursor.project.mcp.json", "cursor", "memory", "npm", "@modelcontextprotocol/server-memory", []),
    ("vscode.user.mcp.json", "vscode", "dbhub", "npm", "@bytebase/dbhub",
     ["--transport", "stdio", "--dsn", "${input:db-dsn}"]),
    ("vscode.project.mcp.json", "vscode", "playwright", "npm", "@playwright/mcp", ["--headless"]),
    ("windsurf.mcp_config.json", "windsurf", "git", "pypi", "mcp-server-git", ["--repository", "/home/user/src/app"]),
]  # fmt: skip


def _entry_span(text: str, name: str, client_sample: str) -> tuple[int, int]:
    root = jsonc.parse(text)
    location = ("projects", "/home/user/src/app", "mcpServers", name) if name == "time" else None
    key = "servers" if client_sample.startswith("vscode") else "mcpServers"
    node = locate(root, location or (key, name))
    assert node is not None
    return node.start, node.end


@pytest.mark.parametrize(("sample", "client", "name", "kind", "package", "server_args"), CASES)
def test_adopt_changes_only_that_entry_and_restore_is_byte_exact(
    machine: Machine, sample: str, client: str, name: str, kind: PackageKind, package: str, server_args: list[str]
) -> None:
    cfg = machine.config(sample)
    cfg.chmod(0o640)
    original = cfg.read_bytes()
    launcher = machine.manage(name, kind, package)

    (out,) = adopt(FleetSettings(), machine.fleet, name, client=client, project=machine.project)
    assert out.outcome == "ok", out.message
    after = cfg.read_bytes()
    text, new_text = original.decode(), after.decode()
    start, end = _entry_span(text, name, sample)
    # Everything before and after this entry's object is byte-identical (other servers, comments, CRLF, tabs,
    # the trailing newline or its absence).
    assert new_text[:start] == text[:start]
    assert new_text[len(new_text) - (len(text) - end) :] == text[end:]
    entry = locate(jsonc.parse(new_text), _location(text, name, sample))
    assert entry is not None
    assert entry.to_python()["command"] == str(launcher)
    assert entry.to_python()["args"] == server_args
    old_entry = locate(jsonc.parse(text), _location(text, name, sample))
    assert old_entry is not None
    assert {k: v for k, v in entry.to_python().items() if k not in ("command", "args")} == {
        k: v for k, v in old_entry.to_python().items() if k not in ("command", "args")
    }  # env, type, ... untouched
    if not sample.startswith("vscode"):
        json.loads(after)  # strict-JSON clients still get strict JSON
    assert stat.S_IMODE(cfg.stat().st_mode) == 0o640

    listed = {s.name: s for s in listing(discover(machine.fleet, machine.project), machine.fleet).servers if s.adopted}
    assert listed[name].package == package and listed[name].active == "1.0.0"

    (back,) = restore(machine.fleet, name, client=client)
    assert back.outcome == "ok" and "whole file" in back.message
    assert cfg.read_bytes() == original
    assert stat.S_IMODE(cfg.stat().st_mode) == 0o640
    actions = [(e["action"], e["outcome"]) for e in audit.read(machine.fleet, name)]
    assert actions == [("adopt", "ok"), ("restore", "ok")]


def _location(text: str, name: str, sample: str) -> tuple[str, ...]:
    if sample == "claude.json" and name == "time":
        return ("projects", "/home/user/src/app", "mcpServers", name)
    return ("servers" if sample.startswith("vscode") else "mcpServers", name)


_TEXT = st.text(max_size=12)
_SERVER = st.fixed_dictionaries(
    {"command": st.sampled_from(["uvx", "npx", "/usr/bin/python3"]), "args": st.lists(_TEXT, max_size=4)},
    optional={"env": st.dictionaries(_TEXT, _TEXT, max_size=2), "type": st.just("stdio")},
)


@settings(max_examples=200, deadline=None)
@given(
    servers=st.dictionaries(_TEXT, _SERVER, min_size=1, max_size=5),
    pick=st.integers(min_value=0, max_value=4),
    indent=st.sampled_from([None, 1, 2, 4, "\t"]),
    ascii_only=st.booleans(),
    crlf=st.booleans(),
    comments=st.booleans(),
    new_args=st.lists(_TEXT, max_size=3),
)
def test_the_edit_touches_only_the_entry_values_whatever_the_formatting(
    servers: dict[str, dict[str, Any]],
    pick: int,
    indent: int | str | None,
    ascii_only: bool,
    crlf: bool,
    comments: bool,
    new_args: list[str],
) -> None:
    doc = {"before": [1, {"x": "y"}], "mcpServers": servers, "after": "z"}
    text = json.dumps(doc, indent=indent, ensure_ascii=ascii_only)
    if comments:  # JSONC: a comment line after every line break (never inside a string: dumps escapes newlines)
        text = text.replace("\n", '\n// note, with "quotes" and {braces}\n')
    if crlf:
        text = text.replace("\n", "\r\n")
    name = list(servers)[pick % len(servers)]
    root = jsonc.parse(text)
    entry = locate(root, ("mcpServers", name))
    assert entry is not None

    new_text, edits = edit_entry(text, root, ("mcpServers", name), "/opt/fleet/bin/x", tuple(new_args))
    tail = len(text) - entry.end
    assert new_text[: entry.start] == text[: entry.start] and new_text[len(new_text) - tail :] == text[entry.end :]
    expected = json.loads(json.dumps(doc))
    expected["mcpServers"][name].update(command="/opt/fleet/bin/x", args=new_args)
    assert jsonc.parse(new_text).to_python() == expected
    assert revert_entry(new_text, jsonc.parse(new_text), ("mcpServers", name), edits) == text


def test_restore_reverts_only_the_entry_when_the_rest_of_the_file_changed(machine: Machine) -> None:
    cfg = machine.config("claude.json")  # Claude Code rewrites this file all the time (numStartups, history...)
    original = cfg.read_bytes()
    machine.manage("time", "pypi", "mcp-server-time")
    adopt(FleetSettings(), machine.fleet, "time", client="claude-code")
    edited = cfg.read_bytes().replace(b'"numStartups":42', b'"numStartups":43')
    cfg.write_bytes(edited)
    (back,) = restore(machine.fleet, "time")
    assert back.outcome == "ok" and "entry's command and args" in back.message
    assert cfg.read_bytes() == original.replace(b'"numStartups":42', b'"numStartups":43')


def test_restore_refuses_when_the_entry_itself_changed(machine: Machine) -> None:
    cfg = machine.config("windsurf.mcp_config.json")
    machine.manage("git", "pypi", "mcp-server-git")
    adopt(FleetSettings(), machine.fleet, "git", client="windsurf")
    changed = cfg.read_text().replace('"command": "', '"command": "/usr/local/bin/other-', 1)
    cfg.write_text(changed)
    (out,) = restore(machine.fleet, "git")
    assert out.outcome == "refused"
    assert "changed since it was adopted" in out.message and "original" in out.message
    assert cfg.read_text() == changed  # nothing written
    assert adoptions(machine.fleet, "git")  # still on record, to restore by hand


def test_adopting_without_client_adopts_every_entry_and_restore_undoes_all(machine: Machine) -> None:
    desktop, windsurf = machine.config("claude_desktop_config.json"), machine.config("windsurf.mcp_config.json")
    before = desktop.read_bytes(), windsurf.read_bytes()
    machine.manage("git", "pypi", "mcp-server-git")
    outs = adopt(FleetSettings(), machine.fleet, "git")
    assert sorted(o.client for o in outs if o.outcome == "ok") == ["claude-desktop", "windsurf"]
    again = adopt(FleetSettings(), machine.fleet, "git")
    assert {o.outcome for o in again} == {"skipped"}  # already adopted: nothing written, no second backup
    assert len(adoptions(machine.fleet, "git")) == 2
    restore(machine.fleet)
    assert (desktop.read_bytes(), windsurf.read_bytes()) == before


def test_two_adoptions_in_one_file_restore_in_any_order(machine: Machine) -> None:
    cfg = machine.config("claude.json")
    original = cfg.read_bytes()
    machine.manage("time", "pypi", "mcp-server-time")
    machine.manage("fetch", "pypi", "mcp-server-fetch")
    adopt(FleetSettings(), machine.fleet, "time", client="claude-code")
    adopt(FleetSettings(), machine.fleet, "fetch", client="claude-code")
    restore(machine.fleet, "time")  # the older one first: a textual revert
    restore(machine.fleet, "fetch")
    assert cfg.read_bytes() == original


def test_a_symlinked_config_is_edited_at_its_target(machine: Machine, tmp_path: Path) -> None:
    cfg = machine.config("cursor.project.mcp.json")
    dotfiles = tmp_path / "dotfiles" / "mcp.json"
    dotfiles.parent.mkdir()
    cfg.rename(dotfiles)
    cfg.symlink_to(dotfiles)
    original = dotfiles.read_bytes()
    machine.manage("memory", "npm", "@modelcontextprotocol/server-memory")
    adopt(FleetSettings(), machine.fleet, "memory")
    assert cfg.is_symlink() and str(machine.fleet.launcher("memory")) in dotfiles.read_text()
    restore(machine.fleet, "memory")
    assert cfg.is_symlink() and dotfiles.read_bytes() == original


def test_a_read_only_config_is_refused_and_left_alone(machine: Machine) -> None:
    cfg = machine.config("cursor.project.mcp.json")
    cfg.chmod(0o444)
    before = cfg.read_bytes()
    machine.manage("memory", "npm", "@modelcontextprotocol/server-memory")
    with pytest.raises(FleetConfigError, match="is read-only"):
        adopt(FleetSettings(), machine.fleet, "memory")
    assert cfg.read_bytes() == before and not adoptions(machine.fleet)


def test_remote_and_unknown_servers_are_refused_with_the_reason(machine: Machine) -> None:
    before = machine.config("claude_desktop_config.json").read_bytes()
    (out,) = adopt(FleetSettings(), machine.fleet, "sqlite-docker")
    assert out.outcome == "refused" and "'docker'" in out.message
    (out,) = adopt(FleetSettings(), machine.fleet, "linear")
    assert out.outcome == "refused" and "remote server" in out.message
    assert machine.config("claude_desktop_config.json").read_bytes() == before


def test_an_entry_whose_runner_options_adoption_would_lose_is_refused(machine: Machine) -> None:
    cfg = machine.config("windsurf.mcp_config.json")
    cfg.write_text('{"mcpServers": {"x": {"command": "uvx", "args": ["--with", "pandas", "--env-file", ".env", "x"]}}}')
    machine.manage("x", "pypi", "x")
    (out,) = adopt(FleetSettings(), machine.fleet, "x")
    assert out.outcome == "refused" and "with --with, --env-file, which obsmcp's install does not" in out.message
    assert "pandas" in cfg.read_text()


def test_names_that_are_not_safe_paths_are_refused(machine: Machine) -> None:
    for bad in ("../evil", "a/b", "", ".hidden", "x" * 65):
        with pytest.raises(FleetValidationError, match="not a server name"):
            adopt(FleetSettings(), machine.fleet, bad)
    with pytest.raises(FleetValidationError, match="unknown client 'emacs'"):
        adopt(FleetSettings(), machine.fleet, "git", client="emacs")
    with pytest.raises(FleetValidationError, match="no MCP server named 'absent'"):
        adopt(FleetSettings(), machine.fleet, "absent")


def test_adopt_in_a_broken_config_names_the_syntax_error(machine: Machine) -> None:
    cfg = machine.config("windsurf.mcp_config.json")
    cfg.write_text('{"mcpServers": {"only-here": {"command": "uvx" "args": ["x"]}}}')
    with pytest.raises(FleetConfigError, match=r"mcp_config\.json:1:48: invalid JSON"):
        adopt(FleetSettings(), machine.fleet, "only-here")


def test_a_failed_install_leaves_the_config_untouched(machine: Machine) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens: the registry is unreachable
    fleet = FleetSettings(pypi_url=dead, npm_registry=dead, mcp_registry=dead)
    cfg = machine.config("claude_desktop_config.json")
    before = cfg.read_bytes()
    with pytest.raises(FleetError):
        adopt(fleet, machine.fleet, "git", client="claude-desktop")
    assert cfg.read_bytes() == before
    assert not machine.fleet.backups.exists() or not any(machine.fleet.backups.iterdir())


def test_the_first_install_is_smoke_tested_with_the_entrys_own_arguments(
    machine: Machine, fleet_index: PackageIndex
) -> None:
    """echo exits at once when given `--version`: an entry that passes it cannot be adopted, because the install's
    smoke test starts the server exactly as the client would (its arguments), so nothing is switched over."""
    cfg = machine.config("claude_desktop_config.json")
    entry = '"echo": {"command": "uvx", "args": ["obsmcp-test-echo==1.0.0", "--version"]},\n    '
    cfg.write_text(cfg.read_text().replace('"git": {', entry + '"git": {', 1))
    before = cfg.read_bytes()
    fleet = FleetSettings(pypi_url=fleet_index.url, npm_registry=fleet_index.url, mcp_registry=fleet_index.url)
    with pytest.raises(FleetError) as e:
        adopt(fleet, machine.fleet, "echo", client="claude-desktop")
    assert e.value.kind == "smoke_test", e.value.message
    assert cfg.read_bytes() == before


def test_a_python_m_entry_is_adopted_only_once_its_package_is_known(machine: Machine) -> None:
    before = machine.config("cursor.mcp.json").read_bytes()
    with pytest.raises(FleetValidationError, match=r"python -m mcp_server_kubernetes\.main.*--package <project>"):
        adopt(FleetSettings(), machine.fleet, "kubernetes")
    assert machine.config("cursor.mcp.json").read_bytes() == before
    machine.manage("kubernetes", "pypi", "kubernetes-mcp")  # `fleet update --package kubernetes-mcp` did this
    (out,) = adopt(FleetSettings(), machine.fleet, "kubernetes")
    assert out.outcome == "ok"


def test_adopt_refuses_a_name_obsmcp_manages_as_another_package(machine: Machine) -> None:
    machine.manage("git", "pypi", "some-other-git-server")
    with pytest.raises(FleetValidationError, match="manages 'git' as pypi package 'some-other-git-server'"):
        adopt(FleetSettings(), machine.fleet, "git", client="windsurf")


def test_restore_with_nothing_adopted_says_so(machine: Machine) -> None:
    with pytest.raises(FleetValidationError, match="nothing to restore"):
        restore(machine.fleet, "git")


# -- the command line --------------------------------------------------------------------------------------------


def _cli(m: Machine, *args: str) -> Any:
    return run_cli("fleet", *args, "--data-dir", str(m.fleet.root.parent), env=m.env, timeout=60)


def test_cli_adopt_and_restore(tmp_path: Path) -> None:
    m = make_machine(tmp_path)
    cfg = m.config("vscode.user.mcp.json")
    original = cfg.read_bytes()
    launcher = m.manage("dbhub", "npm", "@bytebase/dbhub", "0.11.5")
    r = _cli(m, "adopt", "dbhub", "--dry-run", "--project", str(m.project))
    assert r.returncode == 0, r.stderr
    assert (
        f"would run `{launcher} --transport stdio --dsn ${{input:db-dsn}}` instead of `npx @bytebase/dbhub@0.11.5"
        in r.stdout
    )
    assert cfg.read_bytes() == original and not m.fleet.backups.exists()
    r = _cli(m, "adopt", "sentry", "--dry-run", "--project", str(m.project))
    assert "--auth-token [REDACTED]" in r.stdout and "sntryu_" not in r.stdout
    assert "first installs pypi mcp-server-sentry 0.6.2" in r.stdout
    r = _cli(m, "adopt", "dbhub", "--client", "vscode", "--project", str(m.project))
    assert r.returncode == 0, r.stderr
    assert f"now runs {launcher}" in r.stdout
    assert "// VS Code user-level MCP servers" in cfg.read_text()  # comments kept
    listed = _cli(m, "list", "--json", "--project", str(m.project))
    dbhub = next(s for s in json.loads(listed.stdout)["servers"] if s["name"] == "dbhub")
    assert dbhub["adopted"] and dbhub["active"] == "0.11.5" and dbhub["requested"] is None

    r = _cli(m, "restore", "dbhub")
    assert r.returncode == 0, r.stderr
    assert cfg.read_bytes() == original
    r = _cli(m, "restore", "dbhub")
    assert r.returncode == 2 and "nothing to restore" in r.stderr and "Traceback" not in r.stderr


def test_cli_adopt_errors_are_clear(tmp_path: Path) -> None:
    m = make_machine(tmp_path)
    before = {p: p.read_bytes() for p in map(m.config, LAYOUT)}
    r = _cli(m, "adopt", "../../etc/passwd", "--project", str(m.project))
    assert r.returncode == 2 and "validation error" in r.stderr and "Traceback" not in r.stderr
    r = _cli(m, "adopt", "linear", "--project", str(m.project))
    assert r.returncode == 1 and "remote server" in r.stderr
    r = _cli(m, "adopt", "git", "--no-install", "--project", str(m.project))
    assert r.returncode == 2 and "fleet update git" in r.stderr
    assert {p: p.read_bytes() for p in before} == before


# -- end to end: a server obsmcp never installed, adopted from a (loopback) registry -------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("command", "args", "kind", "package"),
    [
        ("uvx", ["obsmcp-test-echo==1.0.0"], "pypi", "obsmcp-test-echo"),
        ("npx", ["-y", "@obsmcp-test/echo@1.0.0"], "npm", "@obsmcp-test/echo"),
    ],
)
async def test_adopt_installs_the_requested_version_and_the_client_entry_starts_it(
    fleet_index: PackageIndex, tmp_path: Path, command: str, args: list[str], kind: str, package: str
) -> None:
    if kind == "npm" and shutil.which("npm") is None:
        pytest.fail("npm is not installed: the npm path cannot be tested (apt-get install npm)")
    m = make_machine(tmp_path)
    cfg = m.config("claude_desktop_config.json")
    text = cfg.read_text()
    entry = f'"echo": {{\n      "command": "{command}",\n      "args": {json.dumps(args)}\n    }},\n    '
    cfg.write_text(text.replace('"git": {', entry + '"git": {', 1))
    original = cfg.read_bytes()
    registry = json.dumps(
        {"pypi_url": fleet_index.url, "npm_registry": fleet_index.url + "/", "mcp_registry": fleet_index.url}
    )
    env = {**m.env, "OBSMCP_FLEET": registry}
    data = ("--data-dir", str(m.fleet.root.parent))

    r = run_cli("fleet", "adopt", "echo", "--project", str(m.project), *data, env=env, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Fully quit and restart claude-desktop" in r.stdout
    adopted = json.loads(cfg.read_bytes())["mcpServers"]["echo"]
    assert adopted == {"command": str(m.fleet.launcher("echo")), "args": []}

    # What Claude Desktop does on its next start: spawn the entry's command with its args, over stdio.
    params = StdioServerParameters(command=adopted["command"], args=adopted["args"])
    async with Client(stdio_client(params), mode="auto") as client:
        tools = sorted(t.name for t in (await client.list_tools()).tools)
    assert tools == ["add", "echo", "reverse"]

    listed = run_cli("fleet", "list", "--json", "--project", str(m.project), *data, env=env)
    echo = next(s for s in json.loads(listed.stdout)["servers"] if s["name"] == "echo")
    assert (echo["kind"], echo["package"], echo["installed"], echo["active"], echo["adopted"]) == (
        kind, package, ["1.0.0"], "1.0.0", True,
    )  # fmt: skip

    r = run_cli("fleet", "restore", "echo", *data, env=env)
    assert r.returncode == 0, r.stderr
    assert cfg.read_bytes() == original
