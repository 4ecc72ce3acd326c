"""The fleet's shared vocabulary: where things live, what a configured MCP server is, what a release is, and
one error type per kind of failure. Every fleet module (clients.py, adopt.py, registry.py, versions.py,
install.py, smoke.py, activate.py, daemon.py) speaks these types.

Layout under the fleet directory (settings `fleet.dir`, default <user data dir>/fleet):

    bin/<name>                      the stable launcher clients run (adopted entries point here)
    servers/<name>/versions/<ver>/  one installed version (a virtualenv, or an npm prefix)
    servers/<name>/active           symlink -> versions/<ver>; activation swaps it atomically (rename)
    servers/<name>/state.json       installed versions, active/previous, history of actions
    backups/                        timestamped copies of client configs before an edit
    staging/                        downloads and installs in progress (removed or completed, never half-used)
    audit.jsonl                     every action: who, what, from, to, verification, outcome
    daemon.lock                     one `fleet daemon` at a time
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

ClientName = Literal["claude-desktop", "claude-code", "cursor", "vscode", "windsurf"]
PackageKind = Literal["pypi", "npm", "remote", "unknown"]

# A server's name as obsmcp uses it in paths and launchers (client configs may hold any key; those that do not
# match are listed but cannot be managed until renamed).
SERVER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class FleetError(Exception):
    """Base of every fleet failure. `kind` names the class of failure for the CLI, the audit log and tools."""

    kind = "fleet"

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class FleetConfigError(FleetError):
    kind = "configuration"


class FleetValidationError(FleetError):
    kind = "validation"


class FleetNetworkError(FleetError):
    kind = "network"


class VerificationError(FleetError):
    kind = "verification"


class SmokeTestError(FleetError):
    kind = "smoke_test"


class FleetSettings(BaseModel):
    """The config file's `[fleet]` table (env: OBSMCP_FLEET as JSON)."""

    model_config = ConfigDict(extra="forbid")

    dir: Path | None = Field(None, description="fleet directory (default: <user data dir>/fleet)")
    pypi_url: str = Field("https://pypi.org", description="PyPI (JSON API at /pypi/<name>/json, PEP 503 at /simple)")
    npm_registry: str = Field("https://registry.npmjs.org", description="npm registry")
    mcp_registry: str = Field("https://registry.modelcontextprotocol.io", description="official MCP registry")
    check_schedule: str = Field("0 */6 * * *", description="cron schedule of `fleet daemon` checks")
    update_schedule: str = Field("30 3 * * *", description="cron schedule of `fleet daemon` updates (opted-in only)")
    auto_update: list[str] = Field(default_factory=list, description="servers the daemon may update")
    jitter_s: float = Field(300.0, ge=0, description="random delay added to each scheduled run")
    keep_versions: int = Field(3, ge=2, description="cleanup keeps the newest N versions (and active, previous)")
    keep_days: float = Field(14.0, ge=0, description="cleanup keeps versions installed less than D days ago")
    smoke_timeout_s: float = Field(30.0, gt=0, description="time a new version has to answer the MCP handshake")
    daemon_port: int = Field(8091, ge=0, le=65535, description="`fleet daemon` status and /metrics port (0 = off)")


@dataclass(frozen=True)
class FleetPaths:
    root: Path

    @property
    def bin(self) -> Path:
        return self.root / "bin"

    def launcher(self, name: str) -> Path:
        return self.bin / name

    def server(self, name: str) -> Path:
        return self.root / "servers" / name

    def versions(self, name: str) -> Path:
        return self.server(name) / "versions"

    def version_dir(self, name: str, version: str) -> Path:
        return self.versions(name) / version

    def active(self, name: str) -> Path:
        return self.server(name) / "active"

    def state_file(self, name: str) -> Path:
        return self.server(name) / "state.json"

    @property
    def backups(self) -> Path:
        return self.root / "backups"

    @property
    def staging(self) -> Path:
        return self.root / "staging"

    @property
    def audit_log(self) -> Path:
        return self.root / "audit.jsonl"

    @property
    def daemon_lock(self) -> Path:
        return self.root / "daemon.lock"


@dataclass(frozen=True)
class ServerEntry:
    """One MCP server as a client config declares it (names of env variables only, never their values)."""

    name: str
    client: ClientName
    config_path: Path
    scope: Literal["user", "project"]
    kind: PackageKind
    package: str | None = None  # PyPI project / npm package name
    requested: str | None = None  # the version the entry asks for, if pinned (e.g. '1.2.0')
    command: str | None = None
    args: tuple[str, ...] = ()
    url: str | None = None  # remote servers
    env_keys: tuple[str, ...] = ()
    adopted: bool = False  # the entry runs obsmcp's launcher

    @property
    def pinned(self) -> bool:
        return self.requested is not None


@dataclass(frozen=True)
class Artifact:
    """A downloadable file of a release, with the digest the registry publishes for it."""

    url: str
    filename: str
    sha256: str | None  # None: the registry publishes none (refused unless --allow-unverified)
    size: int | None = None


@dataclass(frozen=True)
class Release:
    kind: PackageKind
    package: str
    version: str
    artifacts: tuple[Artifact, ...] = ()
    published: datetime | None = None
    yanked: bool = False
    notes_url: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


__all__ = [
    "SERVER_NAME",
    "Artifact",
    "ClientName",
    "FleetConfigError",
    "FleetError",
    "FleetNetworkError",
    "FleetPaths",
    "FleetSettings",
    "FleetValidationError",
    "PackageKind",
    "Release",
    "ServerEntry",
    "SmokeTestError",
    "VerificationError",
]
