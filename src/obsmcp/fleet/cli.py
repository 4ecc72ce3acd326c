"""Imports every module that registers `obsmcp fleet` commands (each adds its own to fleet_app)."""

from __future__ import annotations

from obsmcp.fleet.app import fleet_app

# Command modules register on import; add yours here (one line).
COMMAND_MODULES: tuple[str, ...] = (
    "obsmcp.fleet.cmd_config",
    "obsmcp.fleet.cmd_update",
    "obsmcp.fleet.check",
    "obsmcp.fleet.daemon",
)


def load() -> None:
    import importlib

    for mod in COMMAND_MODULES:
        importlib.import_module(mod)


__all__ = ["fleet_app", "load"]
