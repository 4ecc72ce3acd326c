"""`obsmcp fleet check`: for every configured MCP server, the version in use against the registries' latest.

The version in use is the active one when obsmcp manages the server, else the version the client entry pins; a
floating entry (`uvx pkg`, `npx -y pkg`) has none: it runs whatever its runner resolves at the next start.
"What changed" is the list of releases between the version in use and the latest (dates, yanked flags, release
notes link). A pinned entry is reported as behind, never as something `--all` updates behind its back. The
official MCP registry's view (its latest version, and a deprecated/deleted status, the registry's kill-switch)
is added when the package is listed there. Read-only: nothing is installed or changed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Literal

import typer
from pydantic import BaseModel, Field

from obsmcp.fleet import versions
from obsmcp.fleet.app import fleet_app
from obsmcp.fleet.clients import ListedServer
from obsmcp.fleet.model import FleetError, FleetPaths, FleetSettings, PackageKind
from obsmcp.fleet.registry import PackageReleases, RegistryListing, mcp_registry_lookup, package_releases

Status = Literal["up_to_date", "update_available", "pinned_behind", "floating", "skipped", "error"]
MAX_CHANGES = 20  # releases listed under "what changed" (the newest ones)


class ReleaseNote(BaseModel):
    version: str
    published: str | None = Field(None, description="ISO 8601 date")
    yanked: bool = False
    notes_url: str | None = None


class RegistryView(BaseModel):
    name: str = Field(description="server name in the official MCP registry")
    version: str
    status: str = Field(description="active | deprecated | deleted (deleted: remove or quarantine it)")
    published: str | None = None
    file_sha256: str | None = None


class ServerCheck(BaseModel):
    name: str
    kind: str
    package: str | None = None
    requested: str | None = Field(None, description="version as the client config asks for it")
    pinned: bool = False
    current: str | None = Field(
        None, description="active version (managed), the pinned one, or what a range resolves to"
    )
    latest: str | None = None
    latest_published: str | None = None
    status: Status
    update_available: bool = False
    current_yanked: bool = Field(False, description="the version in use was yanked/deprecated upstream")
    changes: list[ReleaseNote] = Field(default_factory=list, description="releases after `current` up to `latest`")
    notes_url: str | None = None
    mcp_registry: RegistryView | None = None
    note: str | None = None
    error: str | None = None


class CheckResult(BaseModel):
    checked_at: str
    servers: list[ServerCheck] = Field(default_factory=list)
    updates_available: int = 0
    errors: int = 0


def _iso(d: datetime | None) -> str | None:
    return d.isoformat() if d else None


def _current(row: ListedServer) -> str | None:
    if row.active:
        return row.active
    if row.pinned and row.requested:
        return row.requested
    return None


def _registry_view(listing: RegistryListing | None, kind: PackageKind, package: str) -> RegistryView | None:
    if listing is None:
        return None
    pkg = listing.package_for(kind, package)
    return RegistryView(
        name=listing.name,
        version=(pkg.version if pkg and pkg.version else listing.version),
        status=listing.status,
        published=_iso(listing.published),
        file_sha256=pkg.file_sha256 if pkg else None,
    )


def check_server(
    fleet: FleetSettings,
    row: ListedServer,
    found: PackageReleases | None = None,
    listing: RegistryListing | None = None,
    listing_error: str | None = None,
) -> ServerCheck:
    """One server's answer, from its registry data (fetched by the caller: one fetch per package per run)."""
    base = ServerCheck(
        name=row.name,
        kind=row.kind,
        package=row.package,
        requested=row.requested,
        pinned=row.pinned,
        current=_current(row),
        status="skipped",
    )
    if row.kind not in ("pypi", "npm") or not row.package or found is None:
        why = "remote servers are updated by their operator" if row.kind == "remote" else "not a PyPI or npm package"
        return base.model_copy(update={"note": why})
    kind: PackageKind = "npm" if row.kind == "npm" else "pypi"
    latest = found.latest()
    current = base.current
    changes: list[ReleaseNote] = []
    notes: list[str] = []
    if latest is None:
        return base.model_copy(update={"status": "error", "error": "the registry lists no installable release"})
    held_by_range = False
    if current is None and row.requested and not row.adopted and _is_range(kind, row.requested):
        # `npx pkg@^1.2.0`, `uvx "pkg>=1,<2"`: the runner resolves the newest release the range allows.
        try:
            current = versions.max_satisfying(kind, [r.version for r in found.releases if not r.yanked], row.requested)
        except FleetError as e:
            notes.append(str(e))
        if current is None:
            notes.append(f"no release satisfies the requested range {row.requested}")
        else:
            held_by_range = True
            notes.append(f"range {row.requested} resolves to {current}")
    cur_release = found.get(current) if current else None
    if current and cur_release is None:
        notes.append(f"{current} is not listed by the registry")
    newer = current is not None and _newer(kind, latest.version, current)
    if current and newer:
        rels = found.between(current, latest.version)[-MAX_CHANGES:]
        changes = [
            ReleaseNote(version=r.version, published=_iso(r.published), yanked=r.yanked, notes_url=r.notes_url)
            for r in rels
        ]
    status: Status
    if current is None:
        status = "floating"
        notes.append("floating entry: its runner fetches the latest at the next start")
    elif not newer:
        status = "up_to_date"
    elif held_by_range:
        status = "pinned_behind"
        notes.append(f"latest {latest.version} is outside the range: widen it (or `fleet adopt`) to update")
    elif row.pinned and not row.adopted:
        status = "pinned_behind"
        notes.append("pinned in the client config: change the pin (or `fleet adopt`) to update")
    else:
        status = "update_available"
    view = _registry_view(listing, kind, row.package)
    if view is not None and view.status != "active":
        notes.append(f"the MCP registry marks {view.name} as {view.status}")
    if listing_error:
        notes.append(f"MCP registry not consulted: {listing_error}")
    return base.model_copy(
        update={
            "current": current,
            "latest": latest.version,
            "latest_published": _iso(latest.published),
            "status": status,
            "update_available": newer,
            "current_yanked": bool(cur_release and cur_release.yanked),
            "changes": changes,
            "notes_url": latest.notes_url or found.project_url,
            "mcp_registry": view,
            "note": "; ".join(notes) or None,
        }
    )


def _is_range(kind: PackageKind, spec: str) -> bool:
    return spec.strip().lower() not in ("", "*", "latest") and versions.is_range(kind, spec)


def _newer(kind: PackageKind, candidate: str, current: str) -> bool:
    try:
        return versions.is_newer(kind, candidate, current)
    except FleetError:  # a requested spec that is not one version (">=1"): compare nothing, report latest
        return False


def _fetch(
    fleet: FleetSettings, kind: PackageKind, package: str, with_registry: bool
) -> tuple[PackageReleases | None, str | None, RegistryListing | None, str | None]:
    try:
        found = package_releases(fleet, kind, package)
    except FleetError as e:
        return None, str(e), None, None
    listing, listing_error = None, None
    if with_registry:
        try:
            listing = mcp_registry_lookup(fleet, kind, package)
        except FleetError as e:
            listing_error = str(e)
    return found, None, listing, listing_error


def check_rows(
    fleet: FleetSettings, rows: Iterable[ListedServer], *, mcp_registry: bool = True, workers: int = 4
) -> CheckResult:
    """Check every row; each (kind, package) is fetched once, a few in parallel."""
    rows = list(rows)
    wanted = sorted({(r.kind, r.package or "") for r in rows if r.kind in ("pypi", "npm") and r.package})
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="fleet-check") as pool:
        fetched = dict(
            zip(
                wanted,
                pool.map(
                    lambda kp: _fetch(fleet, "npm" if kp[0] == "npm" else "pypi", str(kp[1]), mcp_registry), wanted
                ),
                strict=True,
            )
        )
    out = []
    for row in rows:
        got = fetched.get((row.kind, row.package or ""))
        if got is not None and got[0] is None:
            out.append(
                ServerCheck(
                    name=row.name,
                    kind=row.kind,
                    package=row.package,
                    requested=row.requested,
                    pinned=row.pinned,
                    current=_current(row),
                    status="error",
                    error=got[1],
                )
            )
            continue
        found, _, listing, listing_error = got if got is not None else (None, None, None, None)
        out.append(check_server(fleet, row, found, listing, listing_error))
    return CheckResult(
        checked_at=datetime.now(UTC).isoformat(timespec="seconds"),
        servers=out,
        updates_available=sum(1 for s in out if s.update_available),
        errors=sum(1 for s in out if s.status == "error"),
    )


def configured_rows(paths: FleetPaths, project: Path | None = None) -> tuple[list[ListedServer], list[str]]:
    """The servers of every client config on this machine (helper D's discovery), one row per server."""
    from obsmcp.fleet.clients import discover, listing

    result = listing(discover(paths, project), paths)
    return result.servers, result.warnings


def check_configured(
    fleet: FleetSettings, paths: FleetPaths, name: str | None = None, project: Path | None = None
) -> tuple[CheckResult, list[str]]:
    rows, warnings = configured_rows(paths, project)
    if name is not None:
        rows = [r for r in rows if r.name == name]
        if not rows:
            from obsmcp.fleet.model import FleetValidationError

            raise FleetValidationError(f"no MCP server named {name!r} is configured", hint="see `obsmcp fleet list`")
    return check_rows(fleet, rows), warnings


# ---- rendering ---------------------------------------------------------------------------------------------

_LABEL = {
    "up_to_date": "up to date",
    "update_available": "update available",
    "pinned_behind": "newer available (pinned)",
    "floating": "floating",
    "skipped": "skipped",
    "error": "error",
}


_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")


def render(result: CheckResult) -> str:
    if not result.servers:
        return "no MCP servers configured (see `obsmcp fleet list`)"
    head = ("NAME", "KIND", "PACKAGE", "CURRENT", "LATEST", "STATUS")
    rows = [head]
    for s in result.servers:
        rows.append((s.name, s.kind, s.package or "-", s.current or "-", s.latest or "-", _LABEL[s.status]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    for s in result.servers:
        details = []
        for c in s.changes:
            flags = " (yanked)" if c.yanked else ""
            details.append(f"  {c.version}  {(c.published or '')[:10]}{flags}")
        if s.changes and s.notes_url:
            details.append(f"  release notes: {s.notes_url}")
        if s.current_yanked:
            details.append(f"  warning: {s.current} was yanked upstream")
        if s.mcp_registry:
            r = s.mcp_registry
            details.append(f"  MCP registry: {r.name} {r.version} ({r.status})")
        if s.note:
            details.append(f"  note: {s.note}")
        if s.error:
            details.append(f"  error: {s.error}")
        if details:
            lines.append(f"\n{s.name}:")
            lines.extend(details)
    lines.append(f"\n{result.updates_available} update(s) available, {result.errors} error(s)")
    # Registry metadata and config text reach a terminal: no escape sequences or other control characters.
    return _CONTROL.sub("?", "\n".join(lines))


ConfigOpt = Annotated[Path | None, typer.Option("--config", envvar="OBSMCP_CONFIG", help="TOML config file")]
DataDirOpt = Annotated[
    Path | None, typer.Option("--data-dir", help="data directory; the fleet lives in <data-dir>/fleet by default")
]


@fleet_app.command("check")
def check_cmd(
    name: Annotated[str | None, typer.Argument(help="only this server (see `fleet list`)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
    project: Annotated[
        Path | None, typer.Option("--project", help="project whose .mcp.json etc. count [default: cwd]")
    ] = None,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Latest versions from PyPI, the npm registry and the official MCP registry, against the versions in use.

    Lists the releases since the version in use (dates, yanked) and a release-notes link. Pinned entries are
    reported as behind, not updated. Exit code 0; 1 when a registry could not be read; 2 on bad input."""
    from obsmcp.config import ConfigError, load_settings

    try:
        settings = load_settings(config, **({"data_dir": data_dir} if data_dir else {}))
        result, warnings = check_configured(settings.fleet, settings.fleet_paths, name, project)
    except ConfigError as e:
        typer.secho(f"error (configuration): {e}", err=True, fg="red")
        raise typer.Exit(2) from None
    except FleetError as e:
        typer.secho(f"error ({e.kind}): {e.message}", err=True, fg="red")
        if e.hint:
            typer.echo(f"hint: {e.hint}", err=True)
        raise typer.Exit(2) from None
    typer.echo(result.model_dump_json(indent=2) if as_json else render(result))
    for w in warnings:
        typer.echo(f"warning: {w}", err=True)
    if result.errors:
        raise typer.Exit(1)


__all__ = [
    "CheckResult",
    "RegistryView",
    "ReleaseNote",
    "ServerCheck",
    "check_configured",
    "check_rows",
    "check_server",
    "configured_rows",
    "render",
]
