"""The fleet's audit log: one JSON line per action (who, what, from, to, verification, outcome), appended to
<fleet dir>/audit.jsonl with mode 0600. Never holds secrets: callers pass versions, paths and names only."""

from __future__ import annotations

import getpass
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from obsmcp.fleet.model import FleetPaths


def _who() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        return str(os.getuid())


def record(
    paths: FleetPaths,
    action: str,
    server: str | None,
    *,
    outcome: str,
    from_version: str | None = None,
    to_version: str | None = None,
    verification: str | None = None,
    detail: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Append one entry and return it. outcome: 'ok', 'failed', 'refused', 'skipped'."""
    entry: dict[str, Any] = {
        "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "who": _who(),
        "action": action,
        "server": server,
        "from": from_version,
        "to": to_version,
        "verification": verification,
        "outcome": outcome,
    }
    if detail:
        entry["detail"] = detail
    entry.update(extra)
    path = paths.audit_log
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(entry, default=str) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line)  # one write of one line: appends from concurrent processes do not interleave
    finally:
        os.close(fd)
    return entry


def read(paths: FleetPaths, server: str | None = None) -> list[dict[str, Any]]:
    """Entries, oldest first (optionally one server's); unreadable lines are skipped."""
    path: Path = paths.audit_log
    if not path.exists():
        return []
    out = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            e = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(e, dict) and (server is None or e.get("server") == server):
            out.append(e)
    return out
