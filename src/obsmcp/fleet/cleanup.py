"""Retention: remove installed versions nobody will roll back to, and report the space freed.

Kept, per server: the active and the previous version (always), the newest `keep` versions by install time,
and every version installed less than `keep_days` days ago. Leftovers of interrupted runs (staging downloads,
`.staging` installs, versions the state file does not know) are removed too and counted.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from obsmcp.fleet import audit
from obsmcp.fleet.install import clear_leftovers, find_leftovers
from obsmcp.fleet.model import SERVER_NAME, FleetPaths
from obsmcp.fleet.state import FleetBusyError, load_state, save_state, server_lock


@dataclass
class CleanupReport:
    removed: list[tuple[str, str, int]] = field(default_factory=list)  # (server, version or path, bytes)
    kept: list[tuple[str, str, str]] = field(default_factory=list)  # (server, version, why)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (server, why)

    @property
    def freed_bytes(self) -> int:
        return sum(b for _, _, b in self.removed)


def tree_size(path: Path) -> int:
    """Bytes used by the files under path (symlinks counted as links, not followed)."""
    if path.is_symlink() or path.is_file():
        return path.lstat().st_size
    total = 0
    for root, dirs, files in os.walk(path):
        for n in files + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, n)).st_size
    return total


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def cleanup(
    paths: FleetPaths, *, keep: int, keep_days: float, dry_run: bool = False, now: datetime | None = None
) -> CleanupReport:
    report = CleanupReport()
    servers_dir = paths.root / "servers"
    if not servers_dir.is_dir():
        return report
    now = now or datetime.now(UTC)
    for server_dir in sorted(servers_dir.iterdir()):
        name = server_dir.name
        if not server_dir.is_dir() or not SERVER_NAME.match(name):
            continue
        try:
            with server_lock(paths, name):
                _cleanup_server(paths, name, keep, keep_days, dry_run, now, report)
        except FleetBusyError:
            report.skipped.append((name, "another fleet operation is running on it"))
    return report


def _cleanup_server(
    paths: FleetPaths, name: str, keep: int, keep_days: float, dry_run: bool, now: datetime, report: CleanupReport
) -> None:
    state = load_state(paths, name)
    leftovers = [(str(p.relative_to(paths.root)), tree_size(p)) for p in find_leftovers(paths, name, state)]
    report.removed += [(name, what, size) for what, size in leftovers]
    if not dry_run and leftovers:
        clear_leftovers(paths, name, state)
        for what, size in leftovers:
            audit.record(paths, "cleanup", name, outcome="ok", detail=f"removed leftover {what}, freed {size} bytes")
    if state is None:
        return
    newest_first = sorted(state.versions.values(), key=lambda v: v.installed_at, reverse=True)
    cutoff = now - timedelta(days=keep_days)
    doomed: list[str] = []
    for rank, v in enumerate(newest_first):
        why = (
            "active"
            if v.version == state.active
            else "previous"
            if v.version == state.previous
            else f"among the newest {keep}"
            if rank < keep
            else f"installed less than {keep_days:g} days ago"
            if v.installed_at >= cutoff
            else None
        )
        if why:
            report.kept.append((name, v.version, why))
        else:
            doomed.append(v.version)
    for version in reversed(doomed):  # oldest first
        d = paths.version_dir(name, version)
        size = tree_size(d) if d.exists() else 0
        report.removed.append((name, version, size))
        if dry_run:
            continue
        # Forget it first: a crash after this leaves an unknown directory that the next run removes.
        del state.versions[version]
        state.add_history("cleanup", "ok", from_version=version, detail=f"removed, {human_bytes(size)} freed")
        save_state(paths, state)
        shutil.rmtree(d, ignore_errors=True)
        audit.record(paths, "cleanup", name, outcome="ok", from_version=version, detail=f"freed {size} bytes")


__all__ = ["CleanupReport", "cleanup", "human_bytes", "tree_size"]
