"""Discovery: every MCP server configured on this machine, read from the MCP clients' config files.

Clients and files (as each client documents them; Linux paths of Claude Desktop and VS Code as MCPM reads them):

- Claude Desktop: `$XDG_CONFIG_HOME/Claude/claude_desktop_config.json` (default ~/.config; also the lower-case
  `claude` folder some installers use) and macOS `~/Library/Application Support/Claude/...`; key `mcpServers`.
- Claude Code: `.mcp.json` in the project (key `mcpServers`), `~/.claude.json` (or `$CLAUDE_CONFIG_DIR/.claude.json`):
  top-level `mcpServers` (user scope) and `projects.<path>.mcpServers` (local scope, one per project).
- Cursor: `~/.cursor/mcp.json`, `<project>/.cursor/mcp.json`; key `mcpServers`.
- VS Code: `<project>/.vscode/mcp.json` and the user profile's `mcp.json` (`$XDG_CONFIG_HOME/Code/User/`,
  `~/Library/Application Support/Code/User/`, also Code - Insiders); key `servers` (+ `inputs`); JSONC.
- Windsurf: `~/.codeium/windsurf/mcp_config.json`; key `mcpServers`, remote URL key `serverUrl`.

Each entry is classified by how it runs (obsmcp.fleet.runners): `pypi` (uvx, uv tool run, pipx run, python -m),
`npm` (npx), `remote` (url/serverUrl, type http/sse), `unknown` (docker, local paths, anything else). Environment
variables and headers are read by name only: their values (secrets, often) are never kept, printed or logged.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from obsmcp.fleet import jsonc
from obsmcp.fleet.model import ClientName, FleetConfigError, FleetError, FleetPaths, PackageKind, ServerEntry
from obsmcp.fleet.runners import Classified, classify, npm_spec, pypi_spec
from obsmcp.redaction import redact, sensitive_key

MAX_CONFIG_BYTES = 64 * 1024 * 1024  # ~/.claude.json grows with history; anything past this is not a config


@dataclass(frozen=True)
class ClientFile:
    """One config file a client reads: where it is, whose it is, and the key its servers live under."""

    client: ClientName
    path: Path
    scope: Literal["user", "project"]
    servers_key: str = "mcpServers"


@dataclass(frozen=True)
class Found:
    """A configured server with what `fleet adopt` needs besides the ServerEntry."""

    entry: ServerEntry
    location: tuple[str, ...]  # JSON keys from the root to the entry: ("mcpServers", "fs") or ("projects", p, ...)
    server_args: tuple[str, ...] = ()  # the server's own arguments (after the runner and the package spec)
    spec: str | None = None  # the version as written: "1.2.0", "latest", ">=1.0"; None when absent
    header_keys: tuple[str, ...] = ()
    program: str | None = None  # the console script / bin named in the entry (uvx --from P X, npx -p P X), if any
    guessed: bool = False  # the package name is a guess (python -m module): adopt asks for it to be confirmed
    runner_opts: tuple[str, ...] = ()  # runner options adoption would lose (uvx --with X, --env-file F, ...)


@dataclass
class Discovery:
    servers: list[Found] = field(default_factory=list)
    warnings: list[FleetError] = field(default_factory=list)  # unreadable or invalid files: the others still count
    files: list[Path] = field(default_factory=list)  # config files that exist and were read


# -- where the configs are ---------------------------------------------------------------------------------------


def client_files(project: Path | None = None, env: Mapping[str, str] | None = None) -> list[ClientFile]:
    """Every config file the supported clients read, existing or not. HOME and XDG_CONFIG_HOME are honoured."""
    env = os.environ if env is None else env
    home = Path(env.get("HOME") or Path.home())
    xdg = Path(env["XDG_CONFIG_HOME"]) if env.get("XDG_CONFIG_HOME") else home / ".config"
    mac = home / "Library" / "Application Support"
    project = Path.cwd() if project is None else project
    claude_dir = Path(env["CLAUDE_CONFIG_DIR"]) if env.get("CLAUDE_CONFIG_DIR") else home
    files = [
        ClientFile("claude-desktop", xdg / "Claude" / "claude_desktop_config.json", "user"),
        ClientFile("claude-desktop", xdg / "claude" / "claude_desktop_config.json", "user"),
        ClientFile("claude-desktop", mac / "Claude" / "claude_desktop_config.json", "user"),
        ClientFile("claude-code", claude_dir / ".claude.json", "user"),
        ClientFile("claude-code", project / ".mcp.json", "project"),
        ClientFile("cursor", home / ".cursor" / "mcp.json", "user"),
        ClientFile("cursor", project / ".cursor" / "mcp.json", "project"),
        ClientFile("vscode", xdg / "Code" / "User" / "mcp.json", "user", "servers"),
        ClientFile("vscode", xdg / "Code - Insiders" / "User" / "mcp.json", "user", "servers"),
        ClientFile("vscode", mac / "Code" / "User" / "mcp.json", "user", "servers"),
        ClientFile("vscode", project / ".vscode" / "mcp.json", "project", "servers"),
        ClientFile("windsurf", home / ".codeium" / "windsurf" / "mcp_config.json", "user"),
    ]
    if sys.platform == "win32" and env.get("APPDATA"):
        appdata = Path(env["APPDATA"])
        files.append(ClientFile("claude-desktop", appdata / "Claude" / "claude_desktop_config.json", "user"))
        files.append(ClientFile("vscode", appdata / "Code" / "User" / "mcp.json", "user", "servers"))
    seen: set[Path] = set()
    out = []
    for f in files:  # on a case-insensitive filesystem Claude and claude are one file: read it once
        key = f.path.resolve() if f.path.exists() else f.path
        if key not in seen:
            seen.add(key)
            out.append(f)
    return out


# -- reading -----------------------------------------------------------------------------------------------------


def read_config(path: Path) -> tuple[bytes, str, jsonc.Node]:
    """(raw bytes, text, parsed root). Raises FleetConfigError naming file:line:col and what to fix."""
    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise FleetConfigError(f"{path} is {size} bytes, too large for a client config", hint="check the file")
        raw = path.read_bytes()
    except OSError as e:
        raise FleetConfigError(f"cannot read {path}: {e.strerror}", hint="check the file's permissions") from e
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise FleetConfigError(
            f"{path}: byte {e.start} is not UTF-8", hint="save it as UTF-8, the encoding JSON requires"
        ) from e
    if not text.strip():
        return raw, text, jsonc.Node("object", 0, 0)  # an empty file: the client treats it as no servers
    try:
        root = jsonc.parse(text)
    except jsonc.JsoncError as e:
        raise FleetConfigError(
            f"{path}:{e.line}:{e.col}: invalid JSON: {e.message}",
            hint="fix the file at that line and column, then run the command again",
        ) from e
    if root.kind != "object":
        raise FleetConfigError(f"{path}: the top level is a JSON {root.kind}, expected an object {{...}}")
    return raw, text, root


def _server_maps(cf: ClientFile, root: jsonc.Node) -> Iterator[tuple[tuple[str, ...], Literal["user", "project"]]]:
    """Paths (JSON keys) of the objects that hold servers in this file, with their scope."""
    yield (cf.servers_key,), cf.scope
    if cf.client == "claude-code" and cf.scope == "user":
        projects = root.get("projects")
        if projects is not None and projects.kind == "object":
            for proj, node in projects.members:
                if node.kind == "object" and node.get("mcpServers") is not None:
                    yield ("projects", proj, "mcpServers"), "project"


def locate(root: jsonc.Node, location: tuple[str, ...]) -> jsonc.Node | None:
    node: jsonc.Node | None = root
    for key in location:
        node = node.get(key) if node is not None else None
    return node


def _str_list(node: jsonc.Node | None) -> tuple[str, ...] | None:
    if node is None:
        return ()
    if node.kind != "array" or any(i.kind not in ("string", "number") for i in node.items):
        return None
    return tuple(str(i.value) for i in node.items)


def _keys(node: jsonc.Node | None) -> tuple[str, ...]:
    return tuple(k for k, _ in node.members) if node is not None and node.kind == "object" else ()


def entries_in(cf: ClientFile, root: jsonc.Node, paths: FleetPaths, warnings: list[FleetError]) -> list[Found]:
    found = []
    for where, scope in _server_maps(cf, root):
        servers = locate(root, where)
        if servers is None:
            continue
        if servers.kind != "object":
            warnings.append(FleetConfigError(f"{cf.path}: {'.'.join(where)} is a JSON {servers.kind}, not an object"))
            continue
        for name, node in servers.members:
            if node.kind != "object":
                warnings.append(FleetConfigError(f"{cf.path}: server {name!r} is a JSON {node.kind}, not an object"))
                continue
            f = _entry(cf, scope, (*where, name), name, node, paths)
            if f is None:
                warnings.append(
                    FleetConfigError(
                        f"{cf.path}: server {name!r}: command must be a string and args a list of strings",
                        hint="fix the entry; it is skipped",
                    )
                )
            else:
                found.append(f)
    return found


def _entry(
    cf: ClientFile,
    scope: Literal["user", "project"],
    location: tuple[str, ...],
    name: str,
    node: jsonc.Node,
    paths: FleetPaths,
) -> Found | None:
    cmd_node = node.get("command")
    args = _str_list(node.get("args"))
    if (cmd_node is not None and cmd_node.kind != "string") or args is None:
        return None
    command = str(cmd_node.value) if cmd_node is not None else None
    url = None
    for key in ("url", "serverUrl", "httpUrl"):
        u = node.get(key)
        if u is not None and u.kind == "string":
            url = str(u.value)
            break
    type_node = node.get("type")
    transport = str(type_node.value) if type_node is not None and type_node.kind == "string" else None
    env_keys = _keys(node.get("env"))
    header_keys = _keys(node.get("headers"))

    def make(kind: PackageKind, **fields: Any) -> ServerEntry:
        return ServerEntry(name, cf.client, cf.path, scope, kind, env_keys=env_keys, **fields)

    if command is None and (url is not None or transport in ("http", "sse", "streamable-http")):
        return Found(make("remote", url=url), location, header_keys=header_keys)
    if command is not None and _same_path(command, paths.launcher(name)):
        kind, package = _managed_identity(paths, name)
        entry = make(kind, package=package, command=command, args=args, adopted=True)
        return Found(entry, location, server_args=args, header_keys=header_keys)
    c = classify(command, args)
    entry = make(c.kind, package=c.package, requested=c.requested, command=command, args=args)
    return Found(entry, location, c.server_args, c.spec, header_keys, c.program, c.guessed, c.runner_opts)


def _same_path(command: str, launcher: Path) -> bool:
    return os.path.normpath(os.path.expanduser(command)) == os.path.normpath(launcher)


def _managed_identity(paths: FleetPaths, name: str) -> tuple[PackageKind, str | None]:
    """An adopted entry no longer says what it runs: the fleet state (or the adopt backup) does."""
    from obsmcp.fleet.state import load_state

    try:
        state = load_state(paths, name)
    except FleetError:
        state = None
    if state is not None:
        return state.kind, state.package
    from obsmcp.fleet.adopt import latest_origin  # the backup metadata of the adoption

    origin = latest_origin(paths, name)
    if origin is not None:
        c = classify(origin[0], origin[1])
        return c.kind, c.package
    return "unknown", None


def discover(paths: FleetPaths, project: Path | None = None, env: Mapping[str, str] | None = None) -> Discovery:
    """Every configured server. A file that cannot be read or parsed becomes a warning; the others still count."""
    d = Discovery()
    for cf in client_files(project, env):
        if not cf.path.exists():
            continue
        try:
            _, _, root = read_config(cf.path)  # a directory or an unreadable file is a warning
        except FleetConfigError as e:
            d.warnings.append(e)
            continue
        d.files.append(cf.path)
        d.servers.extend(entries_in(cf, root, paths, d.warnings))
    return d


# -- what obsmcp manages, and the list view ----------------------------------------------------------------------


def redact_args(args: tuple[str, ...]) -> list[str]:
    """Arguments for display: values after secret-named flags (--api-key X, --token=X) and known token shapes go."""
    out = []
    hide_next = False
    for a in args:
        if hide_next:
            out.append("[REDACTED]")
            hide_next = False
            continue
        if a.startswith("-") and "=" in a:
            flag, _, _ = a.partition("=")
            if sensitive_key(flag.lstrip("-")):
                out.append(f"{flag}=[REDACTED]")
                continue
        elif a.startswith("-") and sensitive_key(a.lstrip("-")):
            hide_next = True
        out.append(redact(a))
    return out


def redact_url(url: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return "[unparseable URL]"
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    if parts.username or parts.password:
        netloc = "[REDACTED]@" + netloc
    query = "&".join(
        f"{k}=[REDACTED]" if sensitive_key(k) else f"{k}={v}" if sep else k
        for k, sep, v in (p.partition("=") for p in parts.query.split("&") if p)
    )
    return redact(urlunsplit((parts.scheme, netloc, parts.path, query, "")))


@dataclass(frozen=True)
class Managed:
    installed: tuple[str, ...] = ()
    active: str | None = None
    previous: str | None = None


def managed(paths: FleetPaths, name: str) -> Managed | None:
    """What obsmcp installed for this server (F's state.json), or None when it does not manage it."""
    from obsmcp.fleet.model import SERVER_NAME
    from obsmcp.fleet.state import load_state

    if not SERVER_NAME.match(name):
        return None
    state = load_state(paths, name)  # FleetConfigError when the state file is damaged
    if state is None:
        return None
    return Managed(tuple(state.versions), state.active, state.previous)


class ClientRef(BaseModel):
    client: str
    scope: str
    config: str = Field(description="config file path")
    location: list[str] = Field(description="JSON keys to the entry")


class ListedServer(BaseModel):
    name: str
    kind: str = Field(description="pypi | npm | remote | unknown")
    package: str | None = None
    requested: str | None = Field(None, description="version as the config asks for it")
    pinned: bool = False
    installed: list[str] = Field(default_factory=list, description="versions obsmcp installed")
    active: str | None = None
    managed: bool = Field(False, description="obsmcp installed it (fleet update)")
    adopted: bool = Field(False, description="the client entries run obsmcp's launcher")
    clients: list[ClientRef] = Field(default_factory=list)
    command: str | None = Field(None, description="command and args as configured, secrets redacted")
    url: str | None = Field(None, description="remote URL, secrets redacted")
    env_keys: list[str] = Field(default_factory=list, description="names only, never values")
    header_keys: list[str] = Field(default_factory=list, description="names only, never values")


class ListResult(BaseModel):
    servers: list[ListedServer] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    files: list[str] = Field(default_factory=list, description="config files read")


def listing(d: Discovery, paths: FleetPaths) -> ListResult:
    """One row per server: the same server (name, kind, package, version) in several clients is listed once."""
    rows: dict[tuple[object, ...], ListedServer] = {}
    warnings = [str(w) for w in d.warnings]
    for f in d.servers:
        e = f.entry
        key = (e.name, e.kind, e.package or e.url or e.command, None if e.adopted else f.spec, e.adopted)
        row = rows.get(key)
        if row is None:
            try:
                m = managed(paths, e.name)
            except FleetError as err:
                m = None
                warnings.append(str(err))
            shown = " ".join([e.command or "", *redact_args(e.args)]).strip() or None
            row = ListedServer(
                name=e.name,
                kind=e.kind,
                package=e.package,
                requested=f.spec,
                pinned=e.pinned,
                installed=list(m.installed) if m else [],
                active=m.active if m else None,
                managed=m is not None and m.active is not None,
                adopted=e.adopted,
                command=shown,
                url=redact_url(e.url) if e.url else None,
                env_keys=list(e.env_keys),
                header_keys=list(f.header_keys),
            )
            rows[key] = row
        row.clients.append(
            ClientRef(client=e.client, scope=e.scope, config=str(e.config_path), location=list(f.location))
        )
        row.env_keys = sorted(set(row.env_keys) | set(e.env_keys))
    servers = sorted(rows.values(), key=lambda r: (r.name.lower(), r.kind, r.package or ""))
    warnings = list(dict.fromkeys(warnings))
    return ListResult(servers=servers, warnings=warnings, files=[str(p) for p in d.files])


def requested_label(s: ListedServer) -> str:
    if s.kind in ("remote", "unknown") and not s.requested:
        return "-"
    if s.adopted:
        return "launcher"
    if s.pinned:
        return f"{s.requested} (pinned)"
    return f"{s.requested} (floating)" if s.requested else "floating"


__all__ = [
    "Classified",
    "ClientFile",
    "ClientRef",
    "Discovery",
    "Found",
    "ListResult",
    "ListedServer",
    "Managed",
    "classify",
    "client_files",
    "discover",
    "listing",
    "locate",
    "managed",
    "npm_spec",
    "pypi_spec",
    "read_config",
    "redact_args",
    "redact_url",
    "requested_label",
]
