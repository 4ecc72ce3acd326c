"""The stable launcher and atomic activation.

Clients spawn stdio servers themselves, so obsmcp cannot swap a running process; it swaps what the *next* spawn
runs. An adopted client entry runs bin/<name>, a sh script that never changes:

    exec '<fleet>/servers/<name>/active/obsmcp-run' "$@"

`active` is a symlink to versions/<ver>. Activation creates a new symlink beside it and renames it over `active`
(rename(2) is atomic), so a client starting at any moment runs either the old version or the new one, complete.
`active` is resolved once, when the launcher execs obsmcp-run; everything after that uses absolute paths of
that version, so a switch in the middle of a start cannot mix two versions.

Rollback is the same switch back to an installed version (smoke-tested first). The symlink is the source of
truth: if a run dies between the switch and saving state.json, `reconciled_state` brings the state in line.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable, Sequence
from pathlib import Path

from obsmcp.fleet import audit
from obsmcp.fleet.install import RUN_SCRIPT, run_command
from obsmcp.fleet.model import (
    FleetError,
    FleetPaths,
    FleetSettings,
    FleetValidationError,
    PackageKind,
    SmokeTestError,
)
from obsmcp.fleet.smoke import LaunchSpec
from obsmcp.fleet.state import ServerState, fsync_dir, load_state, save_state, server_lock, write_atomic
from obsmcp.fleet.verify import validate_server_name, validate_version


class ToolChangeRefused(FleetError):
    kind = "tool_change"


def launcher_script(paths: FleetPaths, name: str) -> str:
    validate_server_name(name)
    target = paths.active(name) / RUN_SCRIPT
    return (
        "#!/bin/sh\n"
        f"# obsmcp fleet launcher for {name}: runs the active version (see `obsmcp fleet history {name}`)\n"
        f'exec {shlex.quote(str(target))} "$@"\n'
    )


def ensure_launcher(paths: FleetPaths, name: str) -> Path:
    """Write bin/<name> if it is missing or differs (it only changes if the fleet directory moves)."""
    path = paths.launcher(name)
    body = launcher_script(paths, name)
    try:
        if path.read_text() == body and os.access(path, os.X_OK):
            return path
    except OSError:
        pass
    write_atomic(path, body.encode(), mode=0o755)
    return path


def active_version(paths: FleetPaths, name: str) -> str | None:
    """The version `active` points at now (from the symlink itself: the source of truth for launches)."""
    link = paths.active(name)
    try:
        return Path(os.readlink(link)).name
    except OSError:
        return None


def switch_active(paths: FleetPaths, name: str, version: str, kind: PackageKind = "pypi") -> None:
    """Point `active` at versions/<version> with one rename."""
    validate_server_name(name)
    if kind in ("pypi", "npm"):
        validate_version(kind, version)
    target_dir = paths.version_dir(name, version)
    if not (target_dir / RUN_SCRIPT).is_file():
        raise FleetValidationError(
            f"{target_dir} is not a complete installed version of {name}",
            hint=f"reinstall it with `obsmcp fleet update {name} --version {version}`, or roll back to another one",
        )
    link = paths.active(name)
    tmp = link.with_name(f".active.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    os.symlink(Path("versions") / version, tmp)  # relative to servers/<name>/
    try:
        os.replace(tmp, link)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(link.parent)


# ---- state that follows the symlink, and rollback ---------------------------------------------------------


def reconciled_state(paths: FleetPaths, name: str) -> ServerState | None:
    """The state, corrected if a run died between switching `active` and saving: the symlink is the truth."""
    state = load_state(paths, name)
    if state is None:
        return None
    linked = active_version(paths, name)
    if linked is not None and linked != state.active and linked in state.versions:
        state.previous, state.active = state.active, linked
        state.add_history("reconcile", "ok", to_version=linked, detail="state caught up with the active symlink")
        save_state(paths, state)
    return state


def rollback_server(
    fleet: FleetSettings,
    paths: FleetPaths,
    name: str,
    *,
    to: str | None = None,
    smoke: bool = True,
    echo: Callable[[str], None] | None = None,
    server_args: Sequence[str] = (),
    env_keys: Sequence[str] = (),
    accept_description_changes: bool = False,
) -> tuple[str, str]:
    """Activate the previous version (or `to`, any installed version) atomically; returns (from, to).

    The target is smoke-tested first (unless smoke=False): it worked when it was active, but its environment
    may have broken since (a base Python upgraded under its virtualenv), and rolling back onto a broken version
    would turn a degraded server into a dead one."""
    say = echo or (lambda _line: None)
    validate_server_name(name)
    with server_lock(paths, name):
        state = reconciled_state(paths, name)
        if state is None or state.active is None:
            raise FleetValidationError(f"obsmcp does not manage {name!r}", hint="`obsmcp fleet list` shows servers")
        current = state.active
        target = to or state.previous
        if target is None or target not in state.versions or not paths.version_dir(name, target).is_dir():
            have = ", ".join(v for v in state.versions if v != current) or "none"
            raise FleetValidationError(
                f"no {'version ' + to if to else 'previous version'} of {name} to roll back to (installed: {have})",
                hint=f"`obsmcp fleet history {name}` lists installed versions; "
                f"`obsmcp fleet update {name} --version V` installs one",
            )
        if target == current:
            raise FleetValidationError(f"{name} {target} is already active")
        if not accept_description_changes and _refused_at_tool_diff(state, target):
            raise ToolChangeRefused(
                f"{name} {target} was refused because it adds or changes tool descriptions; not activated "
                f"({current} stays active)",
                hint=f"review them (`obsmcp fleet update {name} --version {target}` shows the diff); to activate it "
                f"anyway, run `obsmcp fleet rollback {name} --to {target} --accept-description-changes`",
            )
        if smoke:
            try:
                LaunchSpec(tuple(server_args), tuple(env_keys)).run(
                    run_command(paths.version_dir(name, target))[0], fleet.smoke_timeout_s
                )
            except SmokeTestError as e:
                state.add_history("rollback", "failed", from_version=current, to_version=target, detail=e.message)
                save_state(paths, state)
                audit.record(paths, "rollback", name, outcome="failed", from_version=current, to_version=target,
                             detail=f"smoke_test: {e.message}"[:1000])  # fmt: skip
                e.hint = f"{current} stays active; `--no-smoke-test` rolls back without the check"
                raise
            say(f"  smoke test of {target} passed")
        switch_active(paths, name, target, state.kind)
        ensure_launcher(paths, name)
        state.previous, state.active = current, target
        state.entry = state.versions[target].entry or state.entry
        state.add_history("rollback", "ok", from_version=current, to_version=target)
        save_state(paths, state)
        audit.record(paths, "rollback", name, outcome="ok", from_version=current, to_version=target,
                     verification=state.versions[target].verification)  # fmt: skip
        say(f"{name}: {current} -> {target} active (rolled back)")
        return current, target


def _refused_at_tool_diff(state: ServerState, version: str) -> bool:
    """True when the last decision about activating `version` was a refusal of its new or changed tools."""
    for h in reversed(state.history):
        if h.to_version != version:
            continue
        if h.outcome == "refused" and (h.detail or "").startswith("tool_diff:"):
            return True
        if h.outcome == "ok":
            return False
    return False


__all__ = [
    "ToolChangeRefused",
    "active_version",
    "ensure_launcher",
    "launcher_script",
    "reconciled_state",
    "rollback_server",
    "switch_active",
]
