"""`obsmcp fleet update | rollback | history | cleanup`: the update path, verify-before-destroy.

    resolve release -> download + verify digest -> install into versions/<ver> (all or nothing)
    -> smoke test (both MCP protocol generations) -> tool diff vs the active version -> atomic activation

A failure at any step leaves the active version untouched (ToolHive's order: nothing running is touched before
the candidate is verified and proven to start). Changed tool descriptions are a tool-poisoning risk ("rug
pull"): activation needs --accept-description-changes, or a "yes" typed at an interactive prompt; --yes alone
does not accept them, so a scheduled `--yes` run can never activate a rewritten description unseen.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from obsmcp.fleet import audit
from obsmcp.fleet.activate import ToolChangeRefused, ensure_launcher, reconciled_state, rollback_server, switch_active
from obsmcp.fleet.app import fleet_app
from obsmcp.fleet.cleanup import CleanupReport, cleanup, human_bytes
from obsmcp.fleet.install import ProgressFactory, clear_leftovers, install_release, run_command
from obsmcp.fleet.model import (
    FleetConfigError,
    FleetError,
    FleetNetworkError,
    FleetPaths,
    FleetSettings,
    FleetValidationError,
    PackageKind,
    Release,
    SmokeTestError,
    VerificationError,
)
from obsmcp.fleet.smoke import LaunchSpec, ToolDiff, diff_tools
from obsmcp.fleet.state import InstalledVersion, ServerState, load_state, save_state, server_lock
from obsmcp.fleet.verify import validate_package, validate_server_name, validate_version

Resolver = Callable[[FleetSettings, PackageKind, str, str | None], Release]
Echo = Callable[[str], None]
Confirm = Callable[[str], bool]


@dataclass
class UpdateOutcome:
    name: str
    status: str  # "activated" | "unchanged" | "declined"
    from_version: str | None
    version: str
    launcher: Path
    verification: str
    protocols: dict[str, str] = field(default_factory=dict)
    tools: list[str] = field(default_factory=list)
    diff: ToolDiff | None = None


def resolve_release(fleet: FleetSettings, kind: PackageKind, package: str, version: str | None) -> Release:
    """The release to install, from the package's registry (obsmcp.fleet.registry)."""
    import importlib

    try:
        registry = importlib.import_module("obsmcp.fleet.registry")
        resolver = registry.resolve_release
    except (ImportError, AttributeError):
        raise FleetConfigError(
            "this obsmcp has no registry client (obsmcp.fleet.registry.resolve_release)", hint="reinstall obsmcp"
        ) from None
    release: Release = resolver(fleet, kind, package, version)
    return release


def update_server(
    fleet: FleetSettings,
    paths: FleetPaths,
    name: str,
    *,
    kind: PackageKind | None = None,
    package: str | None = None,
    version: str | None = None,
    allow_unverified: bool = False,
    accept_description_changes: bool = False,
    entry: str | None = None,
    confirm: Confirm | None = None,
    resolve: Resolver | None = None,
    progress: ProgressFactory | None = None,
    echo: Echo | None = None,
    server_args: Sequence[str] = (),
    env_keys: Sequence[str] = (),
) -> UpdateOutcome:
    """Install (if needed), smoke-test and activate `version` (default: the latest) of one server.

    kind/package are needed only for a server obsmcp does not manage yet. `confirm(question)` is asked before
    activation when given (interactive use); None means non-interactive. Raises a FleetError subclass on failure,
    after recording it in the audit log; the active version is untouched then.

    The smoke test starts the server the way a client would: with `server_args` (the client entry's arguments)
    and, of the current environment, only the safe defaults plus the variables named in `env_keys` (the names
    the client entry sets), so a new, not yet trusted version never sees unrelated secrets."""
    say = echo or (lambda _line: None)
    validate_server_name(name)
    with server_lock(paths, name):
        state = reconciled_state(paths, name)
        clear_leftovers(paths, name, state)
        if state is not None and state.active is None and not state.versions:
            # Only failed attempts so far: nothing is bound to the old identity, the caller's wins.
            state.kind, state.package = kind or state.kind, package or state.package
        elif state is not None:
            if (kind and kind != state.kind) or (package and package != state.package):
                raise FleetValidationError(
                    f"obsmcp manages {name!r} as {state.kind} package {state.package!r}, not {kind} {package!r}",
                    hint="use another server name for a different package",
                )
            kind, package = state.kind, state.package
        if kind is None or package is None:
            raise FleetValidationError(
                f"obsmcp does not manage {name!r} yet and does not know its package",
                hint="configure it in an MCP client (see `obsmcp fleet list`), or pass --kind and --package",
            )
        validate_package(kind, package)
        if version is not None:
            validate_version(kind, version)
        if state is None:
            state = ServerState(name=name, kind=kind, package=package)
        return _update_locked(
            fleet,
            paths,
            state,
            version,
            allow_unverified=allow_unverified,
            accept=accept_description_changes,
            entry=entry,
            confirm=confirm,
            resolve=resolve or resolve_release,
            progress=progress,
            say=say,
            launch=LaunchSpec(tuple(server_args), tuple(env_keys)),
        )


def _update_locked(
    fleet: FleetSettings,
    paths: FleetPaths,
    state: ServerState,
    version: str | None,
    *,
    allow_unverified: bool,
    accept: bool,
    entry: str | None,
    confirm: Confirm | None,
    resolve: Resolver,
    progress: ProgressFactory | None,
    say: Echo,
    launch: LaunchSpec,
) -> UpdateOutcome:
    name, current = state.name, state.active

    def fail(outcome: str, stage: str, e: FleetError, target: str | None, verification: str | None) -> FleetError:
        state.add_history("update", outcome, from_version=current, to_version=target, detail=f"{stage}: {e.message}")
        save_state(paths, state)
        audit.record(
            paths,
            "update",
            name,
            outcome=outcome,
            from_version=current,
            to_version=target,
            verification=verification,
            detail=f"{stage}: {e.message}"[:1000],
            stage=stage,
        )
        return e

    try:
        release = resolve(fleet, state.kind, state.package, version)
        target = validate_version(state.kind, release.version)
    except FleetError as e:
        raise fail("failed", "resolve", e, version, None) from None
    if release.yanked:
        if version is None:  # never pick a withdrawn release on our own
            yanked = FleetValidationError(
                f"the newest release of {state.package} ({target}) is yanked", hint="name a version with --version"
            )
            raise fail("refused", "resolve", yanked, target, None) from None
        say(f"warning: {state.package} {target} was yanked by its publisher; installing it because you named it")
    launcher = paths.launcher(name)
    if target == current and (paths.version_dir(name, target)).is_dir():
        say(f"{name}: {state.package} {target} is already active")
        audit.record(paths, "update", name, outcome="skipped", from_version=current, to_version=target)
        iv = state.versions[target]
        return UpdateOutcome(name, "unchanged", current, target, ensure_launcher(paths, name), iv.verification)

    reused = target in state.versions and paths.version_dir(name, target).is_dir()
    if reused:
        iv = state.versions[target]
        say(f"{name}: {state.package} {target} is already installed ({iv.verification}); re-testing it")
    else:
        say(f"{name}: installing {state.package} {target} (active: {current or 'none'})")
        try:
            files = install_release(
                fleet,
                paths,
                name,
                release,
                allow_unverified=allow_unverified,
                entry=entry,
                preferred_entry=state.entry,
                progress=progress,
            )
        except VerificationError as e:
            raise fail("refused", "verify", e, target, getattr(e, "verification", "mismatch")) from None
        except FleetNetworkError as e:
            raise fail("failed", "download", e, target, None) from None
        except FleetError as e:
            raise fail("failed", "install", e, target, None) from None
        iv = InstalledVersion(
            version=target,
            installed_at=datetime.now(UTC),
            kind=state.kind,
            package=state.package,
            filename=files.filename,
            sha256=files.verification.sha256,
            verification=files.verification.text,
            entry=files.entry,
        )
        state.versions[target] = iv  # recorded now, so it is not mistaken for a leftover
        save_state(paths, state)
        say(f"  verified: {iv.verification}")

    try:
        smoke = launch.run(run_command(paths.version_dir(name, target))[0], fleet.smoke_timeout_s)
    except SmokeTestError as e:
        if not reused:
            del state.versions[target]
            save_state(paths, state)
            clear_leftovers(paths, name, state)  # the failed version is removed, never left half-trusted
        raise fail("failed", "smoke_test", e, target, iv.verification) from None
    iv.tools, iv.protocols = smoke.tools, sorted(set(smoke.protocols.values()))
    save_state(paths, state)
    say(f"  smoke test passed: {', '.join(f'{m} {v}' for m, v in smoke.protocols.items())}; {len(smoke.tools)} tools")

    diff = diff_tools(state.versions[current].tools, smoke.tools) if current in state.versions else None
    if diff is not None:
        say(f"  tools vs {current}:" + (" no changes" if diff.empty else ""))
        for line in diff.lines():
            say(f"    {line}")
    if diff is not None and diff.needs_review and not accept:
        names = ", ".join(diff.needs_review)
        question = f"New or changed tool descriptions ({names}): a tool-poisoning risk. Activate {target} anyway?"
        if confirm is None or not confirm(question):
            refused = ToolChangeRefused(
                f"{name} {target} adds or changes the description of {names}; not activated ({current} stays active)",
                hint=f"read the changes above; to activate, run `obsmcp fleet update {name} --version {target} "
                "--accept-description-changes` (the version stays installed)",
            )
            raise fail("refused", "tool_diff", refused, target, iv.verification) from None
    elif confirm is not None and not confirm(f"Activate {state.package} {target} for {name}?"):
        state.add_history("update", "declined", from_version=current, to_version=target)
        save_state(paths, state)
        audit.record(paths, "update", name, outcome="skipped", from_version=current, to_version=target,
                     verification=iv.verification, detail="declined at the prompt")  # fmt: skip
        return UpdateOutcome(name, "declined", current, target, launcher, iv.verification, smoke.protocols)

    switch_active(paths, name, target, state.kind)
    ensure_launcher(paths, name)
    if current != target:
        state.previous = current
    state.active, state.entry = target, iv.entry
    state.add_history("update", "ok", from_version=current, to_version=target, detail=iv.verification)
    save_state(paths, state)
    audit.record(
        paths,
        "update",
        name,
        outcome="ok",
        from_version=current,
        to_version=target,
        verification=iv.verification,
        protocols=sorted(set(smoke.protocols.values())),
        tool_diff=diff.as_dict() if diff else None,
    )
    say(f"{name}: {current or 'none'} -> {target} active (launcher {launcher})")
    return UpdateOutcome(
        name,
        "activated",
        current,
        target,
        launcher,
        iv.verification,
        dict(smoke.protocols),
        [t.name for t in smoke.tools],
        diff,
    )


def history(paths: FleetPaths, name: str) -> dict[str, Any]:
    validate_server_name(name)
    state = load_state(paths, name)
    events = audit.read(paths, name)
    if state is None and not events:
        raise FleetValidationError(f"no history for {name!r}", hint="`obsmcp fleet list` shows servers")
    return {
        "name": name,
        "package": state.package if state else None,
        "kind": state.kind if state else None,
        "active": state.active if state else None,
        "previous": state.previous if state else None,
        "versions": [
            {
                "version": v.version,
                "installed_at": v.installed_at.isoformat(timespec="seconds"),
                "verification": v.verification,
                "protocols": v.protocols,
                "tools": len(v.tools),
            }
            for v in sorted(state.versions.values(), key=lambda v: v.installed_at)
        ]
        if state
        else [],
        "events": events,
    }


# ---- CLI --------------------------------------------------------------------------------------------------

ConfigOpt = Annotated[Path | None, typer.Option("--config", envvar="OBSMCP_CONFIG", help="TOML config file")]
DataDirOpt = Annotated[
    Path | None, typer.Option("--data-dir", help="data directory; the fleet lives in <data-dir>/fleet by default")
]


def _context(config: Path | None, data_dir: Path | None) -> tuple[FleetSettings, FleetPaths]:
    from obsmcp.config import ConfigError, load_settings

    try:
        settings = load_settings(config, **({"data_dir": data_dir} if data_dir else {}))
    except ConfigError as e:
        raise FleetConfigError(str(e)) from None
    return settings.fleet, settings.fleet_paths


@contextlib.contextmanager
def _cli_errors() -> Iterator[None]:
    """Kind + message + hint on stderr, exit code 2; never a traceback."""
    try:
        yield
    except FleetError as e:
        typer.secho(f"error ({e.kind}): {e.message}", err=True, fg="red")
        if e.hint:
            typer.echo(f"hint: {e.hint}", err=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        typer.echo("interrupted: nothing was half-installed; the active version is unchanged", err=True)
        raise typer.Exit(130) from None


class _RichBar:
    """One download's progress bar on stderr; it disappears when the download ends."""

    def __init__(self, filename: str, total: int | None) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

        self._bars = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        self._task = self._bars.add_task(filename, total=total)
        self._bars.start()

    def advance(self, n: int) -> None:
        self._bars.advance(self._task, n)

    def close(self) -> None:
        self._bars.stop()


def _progress_bars() -> ProgressFactory | None:
    """Download progress bars, only when stderr is a terminal."""
    return _RichBar if sys.stderr.isatty() else None


@dataclass(frozen=True)
class _Discovered:
    kind: PackageKind | None = None
    package: str | None = None
    requested: str | None = None
    entry: str | None = None
    args: tuple[str, ...] = ()
    env_keys: tuple[str, ...] = ()


def _discovered(paths: FleetPaths, name: str) -> _Discovered:
    """What the client configs say about a server: its package (for a first install) and how clients start it
    (arguments, names of environment variables) so the smoke test starts it the same way."""
    from obsmcp.fleet.clients import discover

    for f in discover(paths).servers:
        e = f.entry
        if e.name == name and (e.adopted or e.kind in ("pypi", "npm")):
            kind = e.kind if e.kind in ("pypi", "npm") else None
            return _Discovered(kind, e.package, e.requested, f.program, tuple(f.server_args), tuple(e.env_keys))
    return _Discovered()


def _managed_names(paths: FleetPaths) -> list[str]:
    servers = paths.root / "servers"
    if not servers.is_dir():
        return []
    names = []
    for d in sorted(servers.iterdir()):
        state = load_state(paths, d.name) if (d / "state.json").is_file() else None
        if state is not None and state.active is not None:
            names.append(d.name)
    return names


@fleet_app.command("update")
def update_cmd(
    name: Annotated[str | None, typer.Argument(help="server name (as in the client configs)")] = None,
    all_: Annotated[bool, typer.Option("--all", help="update every server obsmcp manages")] = False,
    version: Annotated[str | None, typer.Option("--version", help="install this version [default: latest]")] = None,
    allow_unverified: Annotated[
        bool, typer.Option("--allow-unverified", help="install even if the registry publishes no digest")
    ] = False,
    accept_description_changes: Annotated[
        bool, typer.Option("--accept-description-changes", help="activate even if tool descriptions changed")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask before activating")] = False,
    kind: Annotated[str | None, typer.Option("--kind", help="pypi | npm (first install only)")] = None,
    package: Annotated[str | None, typer.Option("--package", help="package name (first install only)")] = None,
    entry: Annotated[str | None, typer.Option("--entry", help="command of the package to run")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the outcome as JSON")] = False,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Download, verify (sha256), install, smoke-test and activate a new version.

    Any failure leaves the active version untouched. Changed tool descriptions (a tool-poisoning risk) are
    flagged and need --accept-description-changes; --yes does not accept them.

    Example: obsmcp fleet update my-server --version 1.2.0"""
    with _cli_errors():
        if all_ == (name is not None):
            raise FleetValidationError("give a server NAME or --all (not both)", hint="obsmcp fleet update my-server")
        if kind is not None and kind not in ("pypi", "npm"):
            raise FleetValidationError(f"--kind must be pypi or npm, not {kind!r}")
        fleet, paths = _context(config, data_dir)
        interactive = sys.stdin.isatty() and not as_json
        confirm: Confirm | None = None
        if interactive and not yes:
            confirm = lambda q: typer.confirm(q, default=False, err=True)  # noqa: E731
        elif interactive:  # --yes: no generic prompt, but changed descriptions are still asked about
            confirm = lambda q: "description" in q and typer.confirm(q, default=False, err=True)  # noqa: E731
        echo: Echo = (lambda _l: None) if as_json else (lambda line: typer.echo(line, err=True))
        names = _managed_names(paths) if all_ else [str(name)]
        if all_ and not names:
            raise FleetValidationError("obsmcp manages no server yet", hint="obsmcp fleet update NAME installs one")
        outcomes, failures = [], 0
        for n in names:
            found = _discovered(paths, validate_server_name(n))
            k, p, v, en = kind, package, version, entry
            st = load_state(paths, n)
            # Not installed yet (no state, or only a failed first attempt): the client config says what it is.
            if not all_ and (st is None or st.active is None) and (k is None or p is None):
                k, p, v, en = k or found.kind, p or found.package, v or found.requested, en or found.entry
            try:
                out = update_server(
                    fleet, paths, n, kind=k, package=p, version=None if all_ else v,  # type: ignore[arg-type]
                    allow_unverified=allow_unverified, accept_description_changes=accept_description_changes,
                    entry=en, confirm=confirm, progress=_progress_bars(), echo=echo,
                    server_args=found.args, env_keys=found.env_keys,
                )  # fmt: skip
                outcomes.append(_outcome_json(out))
            except FleetError as e:
                if not all_:
                    raise
                failures += 1
                typer.secho(f"{n}: error ({e.kind}): {e.message}", err=True, fg="red")
                outcomes.append({"name": n, "status": "failed", "error": e.kind, "message": e.message})
        if as_json:
            typer.echo(json.dumps(outcomes if all_ else outcomes[0], indent=2))
        if failures:
            raise typer.Exit(2)


def _outcome_json(out: UpdateOutcome) -> dict[str, Any]:
    return {
        "name": out.name,
        "status": out.status,
        "from": out.from_version,
        "to": out.version,
        "verification": out.verification,
        "protocols": out.protocols,
        "tools": out.tools,
        "tool_diff": out.diff.as_dict() if out.diff else None,
        "launcher": str(out.launcher),
    }


@fleet_app.command("rollback")
def rollback_cmd(
    name: Annotated[str, typer.Argument(help="server name")],
    to: Annotated[str | None, typer.Option("--to", help="an installed version [default: the previous one]")] = None,
    no_smoke_test: Annotated[
        bool, typer.Option("--no-smoke-test", help="switch without starting the version first (emergencies)")
    ] = False,
    accept_description_changes: Annotated[
        bool, typer.Option("--accept-description-changes", help="activate a version refused for new/changed tools")
    ] = False,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Switch back to the previous version atomically (smoke-tested first). Clients pick it up on their next start.

    Example: obsmcp fleet rollback my-server"""
    with _cli_errors():
        fleet, paths = _context(config, data_dir)
        found = _discovered(paths, validate_server_name(name))
        rollback_server(
            fleet,
            paths,
            name,
            to=to,
            smoke=not no_smoke_test,
            echo=lambda s: typer.echo(s, err=True),
            server_args=found.args,
            env_keys=found.env_keys,
            accept_description_changes=accept_description_changes,
        )


@fleet_app.command("history")
def history_cmd(
    name: Annotated[str, typer.Argument(help="server name")],
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Installed versions (verification, protocols) and every action on a server, from the audit log."""
    with _cli_errors():
        _, paths = _context(config, data_dir)
        h = history(paths, name)
        if as_json:
            typer.echo(json.dumps(h, indent=2, default=str))
            return
        typer.echo(f"{name}: {h['kind']} package {h['package']}; active {h['active']}, previous {h['previous']}")
        for v in h["versions"]:
            mark = "*" if v["version"] == h["active"] else " "
            protocols = ", ".join(v["protocols"]) or "-"
            typer.echo(f" {mark} {v['version']:<12} installed {v['installed_at']}  {v['verification']}  [{protocols}]")
        for e in h["events"]:
            move = f"{e.get('from') or '-'} -> {e.get('to') or '-'}"
            line = f"  {e['time'][:19]}  {e['action']:<9} {move:<20} {e['outcome']:<8} {e.get('who', '')}"
            extra = e.get("detail") or (e.get("verification") or "")
            typer.echo(f"{line}  {str(extra).splitlines()[0][:100] if extra else ''}".rstrip())


@fleet_app.command("cleanup")
def cleanup_cmd(
    keep: Annotated[
        int | None, typer.Option("--keep", min=1, help="keep the newest N versions [fleet.keep_versions]")
    ] = None,
    keep_days: Annotated[
        float | None, typer.Option("--keep-days", min=0, help="keep versions newer than D days [fleet.keep_days]")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="only report what would be removed")] = False,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Remove old versions (never the active or previous one) and leftovers of interrupted runs; reports space freed."""
    with _cli_errors():
        fleet, paths = _context(config, data_dir)
        report = cleanup(
            paths,
            keep=keep if keep is not None else fleet.keep_versions,
            keep_days=keep_days if keep_days is not None else fleet.keep_days,
            dry_run=dry_run,
        )
        typer.echo(_render_cleanup(report, dry_run))


def _render_cleanup(report: CleanupReport, dry_run: bool) -> str:
    verb = "would remove" if dry_run else "removed"
    lines = [f"{verb} {s} {what} ({human_bytes(b)})" for s, what, b in report.removed]
    lines += [f"kept {s} {v} ({why})" for s, v, why in report.kept]
    lines += [f"skipped {s}: {why}" for s, why in report.skipped]
    total = report.freed_bytes
    lines.append(f"{'would free' if dry_run else 'freed'} {human_bytes(total)} ({total} bytes)")
    return "\n".join(lines)


__all__ = ["ToolChangeRefused", "UpdateOutcome", "history", "resolve_release", "rollback_server", "update_server"]
