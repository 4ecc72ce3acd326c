"""`fleet adopt` / `fleet restore`: point a client's entry at obsmcp's stable launcher, and undo that.

The edit is textual: only the spans of the entry's `command` and `args` values change; every other byte of the
file (other servers, comments, key order, indentation, line endings, the trailing newline) stays as it was
(a comment inside the replaced `args` array goes with it, and comes back on restore).
Before the edit the whole file is copied to `<fleet>/backups/<time>-<client>-<name>/original` with a
`meta.json` that records where the entry is and the exact text of the values before and after. Restore puts
the original file back when nothing changed since (byte-exact), otherwise reverts the two values textually,
and refuses when the entry itself changed since the adoption. Writes are atomic (temp file in the same
directory, fsync, rename) and keep the file's mode; a symlinked config is edited at its target.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, get_args

from obsmcp.fleet import audit, jsonc
from obsmcp.fleet.clients import Found, discover, locate, read_config, redact_args
from obsmcp.fleet.model import (
    SERVER_NAME,
    ClientName,
    FleetConfigError,
    FleetError,
    FleetPaths,
    FleetSettings,
    FleetValidationError,
)
from obsmcp.fleet.state import load_state, write_atomic

ADOPTABLE = ("pypi", "npm")


@dataclass(frozen=True)
class Outcome:
    name: str
    client: str
    config: Path
    outcome: str  # ok | skipped | refused
    message: str
    backup: Path | None = None


def validate_name(name: str) -> str:
    if not SERVER_NAME.match(name):
        raise FleetValidationError(
            f"{name!r} is not a server name obsmcp can manage",
            hint="names are 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit; rename the "
            "entry in the client config",
        )
    return name


def validate_client(client: str | None) -> str | None:
    if client is not None and client not in get_args(ClientName):
        raise FleetValidationError(f"unknown client {client!r}", hint=f"use one of: {', '.join(get_args(ClientName))}")
    return client


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _target(path: Path) -> Path:
    """The file to write: a symlinked config (dotfile managers) is edited at its target, keeping the link."""
    return path.resolve() if path.is_symlink() else path


def _writable(path: Path) -> None:
    """Refuse a read-only config (home-manager, nix, a deliberate chmod): someone else owns its content."""
    if not stat.S_IMODE(path.stat().st_mode) & 0o222 or not os.access(path.parent, os.W_OK):
        raise FleetConfigError(
            f"{path} is read-only", hint="it is managed elsewhere (e.g. a dotfiles tool): change the entry there"
        )


def _write_keeping_mode(path: Path, data: bytes) -> None:
    mode = stat.S_IMODE(path.stat().st_mode) if path.exists() else 0o600
    try:
        write_atomic(path, data, mode)
    except OSError as e:
        raise FleetConfigError(f"cannot write {path}: {e.strerror}", hint="check the file's folder permissions") from e


def _splice(text: str, edits: list[tuple[int, int, str]]) -> str:
    for start, end, new in sorted(edits, reverse=True):  # from the end, so earlier offsets stay valid
        text = text[:start] + new + text[end:]
    return text


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


# -- the textual edit ---------------------------------------------------------------------------------------------


def edit_entry(
    text: str, root: jsonc.Node, location: tuple[str, ...], launcher: str, server_args: tuple[str, ...]
) -> tuple[str, list[dict[str, str]]]:
    """The file's text with the entry's `command` value replaced by the launcher and its `args` value by the
    server's own arguments: only those two spans change. Returns the new text and the edits (key, old, new text)."""
    node = locate(root, location)
    cmd = node.get("command") if node is not None else None
    if node is None or cmd is None:
        raise FleetConfigError(f"no command at {'.'.join(location)}")
    edits = [("command", cmd.start, cmd.end, _json(launcher))]
    args = node.get("args")
    if args is not None:
        edits.append(("args", args.start, args.end, "[" + ", ".join(_json(a) for a in server_args) + "]"))
    new_text = _splice(text, [(s, end, new) for _, s, end, new in edits])
    return new_text, [{"key": k, "old": text[s:end], "new": new} for k, s, end, new in edits]


def revert_entry(text: str, root: jsonc.Node, location: tuple[str, ...], edits: list[dict[str, str]]) -> str | None:
    """Undo `edit_entry` textually; None when the entry no longer holds exactly what the edit wrote."""
    node = locate(root, location)
    spans = []
    for ed in edits:
        value = node.get(ed["key"]) if node is not None else None
        if value is None or text[value.start : value.end] != ed["new"]:
            return None
        spans.append((value.start, value.end, str(ed["old"])))
    return _splice(text, spans)


# -- adopt -------------------------------------------------------------------------------------------------------


def _matches(
    paths: FleetPaths, name: str, client: str | None, project: Path | None, echo: Callable[[str], None] | None
) -> list[Found]:
    d = discover(paths, project)
    found = [f for f in d.servers if f.entry.name == name and (client is None or f.entry.client == client)]
    if not found:
        broken = [w for w in d.warnings if isinstance(w, FleetConfigError)]
        if broken:  # the server may be in the file that does not parse: say what to fix there
            raise broken[0]
        where = f" in {client}'s configs" if client else " in any client config"
        raise FleetValidationError(f"no MCP server named {name!r}{where}", hint="`obsmcp fleet list` shows them")
    for w in d.warnings:  # a broken file may hold another entry of this server: say it was not looked at
        if echo is not None:
            echo(f"warning: {w}")
    return found


def _ensure_installed(
    fleet: FleetSettings, paths: FleetPaths, f: Found, allow_unverified: bool, echo: Callable[[str], None] | None
) -> str:
    """The active version, installing the requested one first (fleet update's path) when obsmcp has none."""
    e = f.entry
    state = load_state(paths, e.name)
    if state is not None and state.active is not None:
        if state.kind != e.kind or (state.package != e.package and not f.guessed):
            raise FleetValidationError(
                f"obsmcp manages {e.name!r} as {state.kind} package {state.package!r}, but this entry runs "
                f"{e.kind} package {e.package!r}",
                hint="rename one of them, or adopt the matching entry with --client",
            )
        return state.active
    if f.guessed:
        raise FleetValidationError(
            f"{e.name!r} runs `python -m {f.program}`: its PyPI project is not known for sure (maybe {e.package!r})",
            hint=f"install it first: `obsmcp fleet update {e.name} --kind pypi --package <project> --entry <script>`",
        )
    from obsmcp.fleet.cmd_update import update_server  # the install path (imported only when installing)

    out = update_server(
        fleet,
        paths,
        e.name,
        kind=e.kind,
        package=e.package,
        version=e.requested,
        allow_unverified=allow_unverified,
        accept_description_changes=True,
        entry=f.program,
        echo=echo,
        server_args=f.server_args,
        env_keys=e.env_keys,
    )
    return str(out.version)


def adopt(
    fleet: FleetSettings,
    paths: FleetPaths,
    name: str,
    *,
    client: str | None = None,
    project: Path | None = None,
    install: bool = True,
    allow_unverified: bool = False,
    echo: Callable[[str], None] | None = None,
    dry_run: bool = False,
) -> list[Outcome]:
    """Point every entry named `name` (in one client, or all) at the launcher. Installs first when needed.
    dry_run: say what would change (outcome "dry-run"), install and write nothing."""
    validate_name(name)
    validate_client(client)
    found = _matches(paths, name, client, project, echo)
    outcomes: list[Outcome] = []
    todo: list[Found] = []
    for f in found:
        e = f.entry
        if e.adopted:
            outcomes.append(Outcome(name, e.client, e.config_path, "skipped", "already runs obsmcp's launcher"))
        elif e.kind not in ADOPTABLE:
            what = (
                "a remote server (nothing to install)"
                if e.kind == "remote"
                else f"not a PyPI or npm package: {e.command!r}"
            )
            msg = f"{e.config_path}: {name!r} is {what}; obsmcp adopts uvx/pipx/python -m and npx entries only"
            audit.record(paths, "adopt", name, outcome="refused", detail=msg, client=e.client)
            outcomes.append(Outcome(name, e.client, e.config_path, "refused", msg))
        elif f.runner_opts:
            msg = (
                f"{e.config_path}: {name!r} runs {e.command} with {', '.join(f.runner_opts)}, which obsmcp's install "
                "does not reproduce (it installs the package alone); remove them from the entry to adopt it"
            )
            audit.record(paths, "adopt", name, outcome="refused", detail=msg, client=e.client)
            outcomes.append(Outcome(name, e.client, e.config_path, "refused", msg))
        else:
            todo.append(f)
    packages = {(f.entry.kind, f.entry.package) for f in todo}
    if len(packages) > 1:
        listed = "; ".join(f"{f.entry.client} ({f.entry.config_path}): {f.entry.kind} {f.entry.package}" for f in todo)
        raise FleetValidationError(
            f"{name!r} runs different packages in different clients: {listed}",
            hint="adopt one with --client, and rename the others",
        )
    if not todo:
        return outcomes
    if dry_run:
        return outcomes + [_preview(paths, f) for f in todo]
    version = None
    if install:
        version = _ensure_installed(fleet, paths, todo[0], allow_unverified, echo)
    elif not (paths.launcher(name).exists()):
        raise FleetValidationError(
            f"{name!r} has no launcher at {paths.launcher(name)}", hint=f"run `obsmcp fleet update {name}` first"
        )
    for f in todo:
        outcomes.append(_adopt_entry(paths, f, version))
    return outcomes


def _shown(command: str | None, args: tuple[str, ...]) -> str:
    return " ".join([command or "", *redact_args(args)]).strip()


def _preview(paths: FleetPaths, f: Found) -> Outcome:
    e = f.entry
    path = _target(e.config_path)
    read_config(path)  # a syntax error now, not after the install
    _writable(path)
    state = load_state(paths, e.name)
    install = (
        "" if state is not None and state.active else f"; first installs {e.kind} {e.package} {f.spec or 'latest'}"
    )
    msg = (
        f"{path}: {e.name!r} would run `{_shown(str(paths.launcher(e.name)), f.server_args)}` instead of "
        f"`{_shown(e.command, e.args)}`{install}"
    )
    return Outcome(e.name, e.client, path, "dry-run", msg)


def _adopt_entry(paths: FleetPaths, f: Found, version: str | None) -> Outcome:
    e = f.entry
    path = _target(e.config_path)
    raw, text, root = read_config(path)
    node = locate(root, f.location)
    cmd = node.get("command") if node is not None else None
    args_now = node.get("args") if node is not None else None
    args_list = args_now.to_python() if args_now is not None else []
    same_args = isinstance(args_list, list) and tuple(str(a) for a in args_list) == e.args
    if cmd is None or cmd.value != e.command or not same_args:
        raise FleetConfigError(f"{path}: the entry {e.name!r} changed while adopting", hint="run the command again")
    _writable(path)
    launcher = str(paths.launcher(e.name))
    new_text, edits = edit_entry(text, root, f.location, launcher, f.server_args)
    new_raw = new_text.encode("utf-8")

    backup = _new_backup_dir(paths, e.client, e.name)
    (backup / "original").write_bytes(raw)
    os.chmod(backup / "original", 0o600)
    meta = {
        "name": e.name,
        "client": e.client,
        "scope": e.scope,
        "config": str(e.config_path),
        "target": str(path),
        "location": list(f.location),
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "original_sha256": _sha(raw),
        "adopted_sha256": _sha(new_raw),
        "edits": edits,
        "kind": e.kind,
        "package": e.package,
        "requested": f.spec,
        "restored": None,
    }
    write_atomic(backup / "meta.json", (json.dumps(meta, indent=2) + "\n").encode(), 0o600)
    if path.read_bytes() != raw:  # the client rewrote the file meanwhile: do not overwrite its change
        shutil.rmtree(backup)
        raise FleetConfigError(f"{path} changed while adopting {e.name!r}", hint="run the command again")
    _write_keeping_mode(path, new_raw)
    audit.record(
        paths, "adopt", e.name, outcome="ok", to_version=version, detail=f"{e.client} {path}",
        client=e.client, config=str(path), backup=str(backup),
    )  # fmt: skip
    msg = f"{path}: {e.name!r} now runs {launcher}, was `{_shown(e.command, e.args)}` (backup {backup})"
    return Outcome(e.name, e.client, path, "ok", msg, backup)


def _new_backup_dir(paths: FleetPaths, client: str, name: str) -> Path:
    paths.backups.mkdir(parents=True, exist_ok=True, mode=0o700)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    for n in range(100):
        d = paths.backups / f"{stamp}-{client}-{name}" if n == 0 else paths.backups / f"{stamp}-{client}-{name}-{n}"
        try:
            d.mkdir(mode=0o700)
            return d
        except FileExistsError:
            continue
    raise FleetError(f"cannot create a backup directory under {paths.backups}")


# -- restore -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Adoption:
    backup: Path
    meta: dict[str, Any]


def adoptions(paths: FleetPaths, name: str | None = None, *, include_restored: bool = False) -> list[Adoption]:
    """Recorded adoptions, newest first."""
    if not paths.backups.is_dir():
        return []
    out = []
    for d in sorted(paths.backups.iterdir(), reverse=True):
        try:
            meta = json.loads((d / "meta.json").read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(meta, dict) or (name is not None and meta.get("name") != name):
            continue
        if include_restored or not meta.get("restored"):
            out.append(Adoption(d, meta))
    return out


def latest_origin(paths: FleetPaths, name: str) -> tuple[str | None, tuple[str, ...]] | None:
    """(command, args) the newest adoption of `name` replaced, read back from its recorded values."""
    for a in adoptions(paths, name):
        old = {e["key"]: e["old"] for e in a.meta.get("edits", []) if isinstance(e, dict)}
        try:
            command = json.loads(old["command"]) if "command" in old else None
            args = json.loads(old["args"]) if "args" in old else []
        except ValueError:
            continue  # the old values are JSONC text with comments: not worth a full parse here
        if isinstance(command, str) and isinstance(args, list):
            return command, tuple(str(x) for x in args)
    return None


def restore(paths: FleetPaths, name: str | None = None, *, client: str | None = None) -> list[Outcome]:
    """Undo adoptions (of `name`, or all), newest first."""
    if name is not None:
        validate_name(name)
    validate_client(client)
    todo = [a for a in adoptions(paths, name) if client is None or a.meta.get("client") == client]
    if not todo:
        what = f"of {name!r}" if name else ""
        raise FleetValidationError(
            f"nothing to restore: no adoption {what} on record in {paths.backups}".replace("  ", " "),
            hint="`obsmcp fleet list` shows which servers are adopted",
        )
    return [_restore_one(paths, a) for a in todo]


def _restore_one(paths: FleetPaths, a: Adoption) -> Outcome:
    m = a.meta
    name, client = str(m.get("name")), str(m.get("client"))
    path = Path(str(m.get("target") or m.get("config")))
    try:
        current = path.read_bytes()
    except OSError as e:
        return _refused(paths, a, path, f"cannot read {path}: {e.strerror}; the backup is {a.backup / 'original'}")
    if _sha(current) == m.get("adopted_sha256"):
        new = (a.backup / "original").read_bytes()
        if _sha(new) != m.get("original_sha256"):
            return _refused(paths, a, path, f"the backup {a.backup / 'original'} does not match its recorded digest")
        how = "the whole file from the backup (unchanged since the adoption)"
    else:
        try:
            _, text, root = read_config(path)
        except FleetConfigError as e:
            return _refused(paths, a, path, f"{e}; the backup is {a.backup / 'original'}")
        reverted = revert_entry(text, root, tuple(m.get("location", ())), m.get("edits", []))
        if reverted is None:
            return _refused(
                paths, a, path,
                f"{path}: the entry {name!r} changed since it was adopted (its command or args are not the "
                f"launcher's any more); edit it by hand, the original file is {a.backup / 'original'}",
            )  # fmt: skip
        new = reverted.encode("utf-8")
        how = "the entry's command and args (the rest of the file changed since the adoption)"
    _write_keeping_mode(path, new)
    m["restored"] = datetime.now(UTC).isoformat(timespec="seconds")
    write_atomic(a.backup / "meta.json", (json.dumps(m, indent=2) + "\n").encode(), 0o600)
    audit.record(
        paths, "restore", name, outcome="ok", detail=how, client=client, config=str(path), backup=str(a.backup)
    )
    return Outcome(name, client, path, "ok", f"{path}: restored {how}", a.backup)


def _refused(paths: FleetPaths, a: Adoption, path: Path, message: str) -> Outcome:
    name, client = str(a.meta.get("name")), str(a.meta.get("client"))
    audit.record(paths, "restore", name, outcome="refused", detail=message, client=client, config=str(path))
    return Outcome(name, client, path, "refused", message, a.backup)


__all__ = ["Adoption", "Outcome", "adopt", "adoptions", "latest_origin", "restore", "validate_client", "validate_name"]
