"""Where generated dashboards live: `<data_dir>/dashboards/<name>.json`, and nowhere else.

A name is also the dashboard's Grafana uid, so it follows Grafana's uid rules (at most 40 characters) and a
stricter alphabet than Grafana's (letters, digits, `-`, `_`) that cannot spell a path: no separators, no `..`,
no hidden files. The resolved path is checked to sit directly in the directory all the same.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from obsmcp.config import Settings
from obsmcp.tools.context import ToolInputError

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,39}$")


def dashboards_dir(settings: Settings) -> Path:
    return settings.data_dir.expanduser() / "dashboards"


def check_name(name: str) -> str:
    name = name.strip().removesuffix(".json")
    if not NAME.match(name):
        raise ToolInputError(
            f"name {name[:60]!r} is not a dashboard name: use 1-40 letters, digits, '-' or '_' (it is also the "
            "Grafana uid and the file name in obsmcp's dashboards directory; no paths)"
        )
    return name


def path_for(settings: Settings, name: str) -> Path:
    folder = dashboards_dir(settings)
    path = folder / f"{check_name(name)}.json"
    if path.resolve().parent != folder.resolve():
        raise ToolInputError(f"name {name!r} leads outside {folder}: use letters, digits, '-' or '_'")
    return path


def write(settings: Settings, name: str, model: dict[str, Any]) -> tuple[Path, bool]:
    """Write atomically (a reader never sees half a file); (path, replaced an existing file)."""
    path = path_for(settings, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    replaced = path.exists()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(model, f, indent=2, ensure_ascii=False)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path, replaced


def read(settings: Settings, name: str) -> dict[str, Any]:
    path = path_for(settings, name)
    if not path.is_file():
        have = sorted(p.stem for p in dashboards_dir(settings).glob("*.json"))
        listing = ", ".join(have[:20]) if have else "none yet"
        raise ToolInputError(f"no dashboard {path.stem!r} in {path.parent} (have: {listing}): create_dashboard first")
    try:
        model = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ToolInputError(f"{path} is not a readable dashboard JSON file ({e}): create it again") from None
    if not isinstance(model, dict) or not isinstance(model.get("panels"), list):
        raise ToolInputError(f"{path} is not a Grafana dashboard model (no panels): create it again")
    return model
