"""A machine with every supported MCP client configured: the sample configs of tests/data/fleet/clients copied to
where each client keeps them, under a temporary HOME and project directory."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from obsmcp.fleet.model import FleetPaths, PackageKind
from obsmcp.fleet.state import ServerState, save_state

SAMPLES = Path(__file__).parent / "data" / "fleet" / "clients"

# sample file -> (root: "home" | "project", path under it)
LAYOUT: dict[str, tuple[str, str]] = {
    "claude_desktop_config.json": ("home", ".config/Claude/claude_desktop_config.json"),
    "claude.json": ("home", ".claude.json"),
    "project.mcp.json": ("project", ".mcp.json"),
    "cursor.mcp.json": ("home", ".cursor/mcp.json"),
    "cursor.project.mcp.json": ("project", ".cursor/mcp.json"),
    "vscode.user.mcp.json": ("home", ".config/Code/User/mcp.json"),
    "vscode.project.mcp.json": ("project", ".vscode/mcp.json"),
    "windsurf.mcp_config.json": ("home", ".codeium/windsurf/mcp_config.json"),
}

# Secrets planted in the samples (env values, headers, args, URLs): no output may contain them.
SECRETS = (
    "ghp_Zq3x9V7bT2mK8wR4nL6pY1cJ5hD0sF3gA7eQ",
    "sk-ant-api03-abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGH",
    "sntryu_0123456789abcdef",
    "glsa_Zq3x9V7bT2mK8wR4nL6pY1cJ5hD0sF3g",
    "ctx7sk-0a1b2c3d4e5f6a7b8c9d",
    "SuperSecretValue42",
)


@dataclass
class Machine:
    home: Path
    project: Path
    fleet: FleetPaths

    def config(self, sample: str) -> Path:
        root, rel = LAYOUT[sample]
        return (self.home if root == "home" else self.project) / rel

    @property
    def env(self) -> dict[str, str]:
        """What a user's shell would have: HOME, and no XDG/Claude overrides (defaults apply)."""
        env = {k: v for k, v in os.environ.items() if k not in ("XDG_CONFIG_HOME", "CLAUDE_CONFIG_DIR", "APPDATA")}
        env["HOME"] = str(self.home)
        return env

    def manage(self, name: str, kind: PackageKind, package: str, version: str = "1.0.0") -> Path:
        """The state `fleet update` leaves: an active version and the launcher clients run."""
        save_state(self.fleet, ServerState(name=name, kind=kind, package=package, active=version))
        launcher = self.fleet.launcher(name)
        launcher.parent.mkdir(parents=True, exist_ok=True)
        launcher.write_text("#!/bin/sh\nexec true\n")
        launcher.chmod(0o755)
        return launcher


def make_machine(tmp_path: Path) -> Machine:
    m = Machine(tmp_path / "home", tmp_path / "project", FleetPaths(tmp_path / "data" / "fleet"))
    for sample in LAYOUT:
        dest = m.config(sample)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(SAMPLES / sample, dest)
    return m


@pytest.fixture
def machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Machine:
    m = make_machine(tmp_path)
    monkeypatch.setenv("HOME", str(m.home))
    for var in ("XDG_CONFIG_HOME", "CLAUDE_CONFIG_DIR", "APPDATA"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(m.project)
    return m
