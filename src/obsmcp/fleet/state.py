"""Per-server state (servers/<name>/state.json): installed versions, active and previous, and a history of actions.

Written atomically (temp file + fsync + os.replace + fsync of the directory), so a crash leaves either the old or
the new file, never half of one. `server_lock` (fcntl) keeps two `fleet update`/`rollback` runs of the same server
from interleaving: the second one is refused at once with a clear error instead of waiting behind the first.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from obsmcp.fleet.model import FleetConfigError, FleetError, FleetPaths, PackageKind

HISTORY_LIMIT = 500  # entries kept in state.json; the audit log keeps everything


class FleetBusyError(FleetError):
    kind = "busy"


class ToolSnapshot(BaseModel):
    """What a version's tools/list answered: enough to diff two versions."""

    model_config = ConfigDict(extra="ignore")

    name: str
    description: str | None = None
    input_schema: dict[str, Any] = Field(default_factory=dict)


class InstalledVersion(BaseModel):
    model_config = ConfigDict(extra="ignore")

    version: str
    installed_at: datetime
    kind: PackageKind
    package: str
    filename: str | None = None
    sha256: str | None = None
    verification: str = "unverified"  # "sha256:<hex> ok" | "sha512:<b64> ok" | "unverified"
    entry: str | None = None  # console script (PyPI) or bin (npm) the launcher runs
    protocols: list[str] = Field(default_factory=list)  # protocol versions the smoke test negotiated
    tools: list[ToolSnapshot] = Field(default_factory=list)


class HistoryEntry(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    time: datetime
    action: str
    from_version: str | None = None
    to_version: str | None = None
    outcome: str
    detail: str | None = None


class ServerState(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str
    kind: PackageKind
    package: str
    entry: str | None = None
    active: str | None = None
    previous: str | None = None
    versions: dict[str, InstalledVersion] = Field(default_factory=dict)
    history: list[HistoryEntry] = Field(default_factory=list)

    def add_history(
        self,
        action: str,
        outcome: str,
        *,
        from_version: str | None = None,
        to_version: str | None = None,
        detail: str | None = None,
    ) -> None:
        self.history.append(
            HistoryEntry(
                time=datetime.now(UTC),
                action=action,
                from_version=from_version,
                to_version=to_version,
                outcome=outcome,
                detail=detail,
            )
        )
        del self.history[:-HISTORY_LIMIT]


def is_managed(paths: FleetPaths, name: str) -> bool:
    """True when obsmcp has installed (and activated) a version of this server."""
    state = load_state(paths, name)
    return state is not None and state.active is not None


def load_state(paths: FleetPaths, name: str) -> ServerState | None:
    path = paths.state_file(name)
    try:
        raw = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise FleetConfigError(
            f"cannot read {path}: {e.strerror}", hint="check the fleet directory's permissions"
        ) from e
    try:
        return ServerState.model_validate(json.loads(raw))
    except (json.JSONDecodeError, ValidationError) as e:
        raise FleetConfigError(
            f"{path} is not a valid fleet state file ({type(e).__name__})",
            hint="restore it from a backup (the installed versions and the active one are untouched until then)",
        ) from e


def save_state(paths: FleetPaths, state: ServerState) -> None:
    write_atomic(paths.state_file(state.name), state.model_dump_json(indent=2).encode() + b"\n")


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace `path` with `data` so that readers (and a crash) see the old file or the new one, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def server_lock(paths: FleetPaths, name: str) -> Iterator[None]:
    """Exclusive lock on one server's directory for the duration of an update, rollback or cleanup.

    The kernel drops the lock when the process dies, so a killed run never leaves the server locked."""
    try:
        import fcntl
    except ImportError:  # Windows: the launcher (sh) and flock are POSIX-only
        raise FleetConfigError("fleet installs need Linux or macOS", hint="use WSL on Windows") from None
    lock_path = paths.server(name) / ".lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise FleetBusyError(
                f"another fleet operation on {name!r} is running (pid {holder})",
                hint="wait for it to finish, then run the command again",
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the flock


__all__ = [
    "FleetBusyError",
    "HistoryEntry",
    "InstalledVersion",
    "ServerState",
    "ToolSnapshot",
    "is_managed",
    "load_state",
    "save_state",
    "server_lock",
    "write_atomic",
]
