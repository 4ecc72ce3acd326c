"""Recorded vendor answers for the remote-source tests (Loki, Tempo, Jaeger), served by tests/faulty_backend.py.

The backends cannot run here, so each test serves response shapes recorded from the vendor's documentation
or source (tests/data/vendor/<vendor>/README.md says which file comes from where) from a real HTTP server on
loopback, and asserts the exact requests the source sent (`FaultyBackend.seen`).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from obsmcp.sources.config import BackendConfig
from tests.faulty_backend import FaultyBackend, Reply, Seen

VENDOR = Path(__file__).parent / "data" / "vendor"


def recorded(name: str) -> Any:
    """A recorded JSON answer, e.g. recorded("loki/labels.json")."""
    return json.loads((VENDOR / name).read_text())


def recorded_reply(name: str, status: int = 200) -> Reply:
    return Reply(status, recorded(name))


def text_reply(status: int, name: str) -> Reply:
    """A plain-text error answer, as Loki's WriteError sends (text/plain)."""
    return Reply(status, (VENDOR / name).read_bytes(), headers={"Content-Type": "text/plain; charset=utf-8"})


def backend_config(server: FaultyBackend, kind: str, **fields: Any) -> BackendConfig:
    """A backend on the recorded server, with a fresh name (clients and metrics are per name)."""
    return BackendConfig.model_validate(
        {"name": f"{kind}-{uuid.uuid4().hex[:8]}", "kind": kind, "url": server.url, "rate_limit_per_s": 0, **fields}
    )


def query_of(seen: Seen) -> dict[str, str]:
    """A request's query parameters as a dict (the sources never repeat a name)."""
    pairs = dict(seen.query)
    assert len(pairs) == len(seen.query), f"repeated parameter in {seen.query}"
    return pairs
