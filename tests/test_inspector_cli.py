"""The MCP Inspector CLI (from npm, the reference MCP client tooling) drives `obsmcp serve` over stdio.

scripts/test.sh (`make test`) installs the Inspector and sets OBSMCP_INSPECTOR; without it these tests fail
rather than skip, because a green run must mean a real MCP client talked to the server.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import DEFAULT_TOOL_NAMES, EXAMPLES_START, OBSMCP, REPO, example_files, run_cli

pytestmark = [pytest.mark.slow, pytest.mark.inspector]


def inspector() -> str:
    env = os.environ.get("OBSMCP_INSPECTOR")
    candidates = [env] if env else [str(REPO / "build" / "inspector" / "node_modules" / ".bin" / "mcp-inspector")]
    for c in candidates:
        if c and Path(c).is_file() and os.access(c, os.X_OK):
            return c
    if shutil.which("node") is None:
        pytest.fail("node is not installed: the MCP Inspector CLI needs Node.js; install it, then run `make test`")
    pytest.fail(
        f"the MCP Inspector CLI was not found at {candidates[0]}: run `make test` (scripts/test.sh "
        "installs it into build/inspector and sets OBSMCP_INSPECTOR)"
    )


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, otlp_examples: Path) -> Path:
    data = tmp_path_factory.mktemp("inspector") / "data"
    r = run_cli("ingest", *map(str, example_files(otlp_examples)), "--data-dir", str(data))
    assert r.returncode == 0, r.stderr
    return data


def run_inspector(store: Path, *args: str, era: str | None = None) -> tuple[int, dict[str, Any], str]:
    cmd = [inspector(), "--cli", "-q", "--format", "json"]
    if era:
        cmd += ["--protocol-era", era]
    # The Inspector starts the server with a minimal environment; settings go on the command line.
    cmd += [str(OBSMCP), "serve", "--data-dir", str(store), "--otlp-port", "0", *args]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=90, cwd=store.parent)
    out = p.stdout.strip()
    try:
        payload = json.loads(out) if out else {}
    except json.JSONDecodeError:
        pytest.fail(
            f"the Inspector printed something that is not JSON (rc {p.returncode}):\n{out[:2000]}\n"
            f"stderr:\n{p.stderr[-2000:]}"
        )
    return p.returncode, payload, p.stderr


@pytest.mark.parametrize("era", [None, "auto"], ids=["default-era", "auto-era"])
def test_inspector_lists_all_nine_tools(store: Path, era: str | None) -> None:
    rc, payload, err = run_inspector(store, "--method", "tools/list", era=era)
    assert rc == 0, f"mcp-inspector tools/list failed ({rc}): {payload} {err[-2000:]}"
    tools = payload["result"]["tools"]
    assert {t["name"] for t in tools} == DEFAULT_TOOL_NAMES
    for t in tools:
        assert t["annotations"]["readOnlyHint"] is True, t["name"]
        assert t["outputSchema"]["type"] == "object", t["name"]
        assert t["inputSchema"]["type"] == "object", t["name"]


@pytest.mark.parametrize("era", [None, "auto"], ids=["default-era", "auto-era"])
def test_inspector_calls_search_logs(store: Path, era: str | None) -> None:
    rc, payload, err = run_inspector(
        store, "--method", "tools/call", "--tool-name", "search_logs", "--tool-arg", f"start={EXAMPLES_START}", era=era
    )
    assert rc == 0, f"mcp-inspector tools/call failed ({rc}): {payload} {err[-2000:]}"
    result = payload["result"]
    assert result["isError"] is False
    sc = result["structuredContent"]
    assert sc["total"] >= 1 and sc["logs"], sc
    assert any(log["body"] == "Example log record" for log in sc["logs"]), sc["logs"]
    assert "Example log record" in result["content"][0]["text"]


def test_inspector_sees_a_tool_error_as_is_error(store: Path) -> None:
    rc, payload, _ = run_inspector(
        store, "--method", "tools/call", "--tool-name", "get_trace", "--tool-arg", "trace_id=not-a-trace"
    )
    # A tool-level error reaches the client as isError with the server's explanation, and the
    # Inspector exits non-zero for it.
    assert rc != 0
    result = payload["result"]
    assert result["isError"] is True
    assert "32 hex" in result["content"][0]["text"], result
