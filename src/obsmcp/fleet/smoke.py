"""Smoke test: start a server over stdio and check that it speaks MCP, in both protocol generations.

Two connections with the real MCP SDK client: `mode="legacy"` (the initialize handshake, 2025-11-25 era) and
`mode="auto"` (`server/discover`, 2026-07-28, falling back to initialize for servers that predate it). Each
must complete and answer tools/list within the timeout. The versions each connection negotiated are recorded, so
`fleet history` shows which generation a version speaks. Failures raise SmokeTestError carrying the tail of
the server's stderr, which is usually where the reason is (an import error, a missing dependency).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client

from obsmcp.fleet.model import SmokeTestError
from obsmcp.fleet.state import ToolSnapshot
from obsmcp.redaction import Redactor

MODES: tuple[str, ...] = ("legacy", "auto")
STDERR_TAIL_BYTES = 2000
_REDACT = Redactor().redact


@dataclass(frozen=True)
class SmokeResult:
    protocols: dict[str, str]  # mode -> negotiated protocol version
    tools: list[ToolSnapshot]
    server_name: str | None


@dataclass(frozen=True)
class LaunchSpec:
    """How to start a server the way its client does: the client entry's arguments, and the names of the
    environment variables the entry sets. Only those (plus the SDK's safe defaults such as PATH and HOME) are
    taken from the current environment, so a new, not yet trusted version never sees unrelated secrets."""

    args: tuple[str, ...] = ()
    env_keys: tuple[str, ...] = ()

    def run(self, command: str, timeout_s: float) -> SmokeResult:
        env = {k: os.environ[k] for k in self.env_keys if k in os.environ}
        return smoke_test(command, self.args, timeout_s=timeout_s, env=env)


def smoke_test(
    command: str,
    args: Sequence[str] = (),
    *,
    timeout_s: float,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
) -> SmokeResult:
    """Run both handshakes against a freshly started process each; raise SmokeTestError on any failure."""
    return anyio.run(_smoke, command, list(args), timeout_s, dict(env or {}), cwd)


async def _smoke(command: str, args: list[str], timeout_s: float, env: dict[str, str], cwd: str | None) -> SmokeResult:
    protocols: dict[str, str] = {}
    tools: list[ToolSnapshot] = []
    server_name: str | None = None
    with tempfile.TemporaryFile(mode="w+b") as errlog:  # a real file: the child writes to its descriptor
        params = StdioServerParameters(command=command, args=args, env=env or None, cwd=cwd)
        for mode in MODES:
            try:
                with anyio.fail_after(timeout_s):
                    transport = stdio_client(params, errlog=errlog)  # type: ignore[arg-type]  # any real file works
                    async with Client(transport, mode=mode) as client:
                        protocols[mode] = client.protocol_version
                        listed = await _list_all_tools(client)
                        server_name = client.server_info.name if client.server_info else None
            except TimeoutError:
                raise _failure(f"no MCP answer within {timeout_s:g} s ({mode} handshake)", errlog) from None
            except Exception as e:
                raise _failure(f"MCP {mode} handshake failed: {_describe(e)}", errlog) from e
            if mode == MODES[0]:
                tools = listed
            elif _names(listed) != _names(tools):
                raise _failure(
                    f"tools differ between protocol generations ({sorted(_names(tools))} vs {sorted(_names(listed))})",
                    errlog,
                )
    return SmokeResult(protocols=protocols, tools=tools, server_name=server_name)


async def _list_all_tools(client: Client) -> list[ToolSnapshot]:
    out: list[ToolSnapshot] = []
    cursor: str | None = None
    for _ in range(100):  # a bound on pagination: a server that pages forever fails the timeout anyway
        result = await client.list_tools(cursor=cursor) if cursor else await client.list_tools()
        for t in result.tools:
            schema: Any = t.input_schema
            out.append(ToolSnapshot(name=t.name, description=t.description, input_schema=dict(schema or {})))
        cursor = result.next_cursor
        if not cursor:
            break
    return sorted(out, key=lambda t: t.name)


def _names(tools: list[ToolSnapshot]) -> set[str]:
    return {t.name for t in tools}


def _describe(e: BaseException) -> str:
    if isinstance(e, BaseExceptionGroup):
        return "; ".join(_describe(x) for x in e.exceptions[:3])
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {text}"[:300] if text else type(e).__name__


def _failure(message: str, errlog: Any) -> SmokeTestError:
    tail = _tail(errlog)
    hint = "the active version was left untouched"
    if tail:
        message = f"{message}\n--- server stderr (last lines) ---\n{tail}"
    return SmokeTestError(message, hint=hint)


def _tail(errlog: Any) -> str:
    try:
        errlog.flush()
        size = os.fstat(errlog.fileno()).st_size
        errlog.seek(max(0, size - STDERR_TAIL_BYTES))
        text = errlog.read().decode("utf-8", errors="replace")
    except (OSError, ValueError):
        return ""
    lines = text.splitlines()[-15:]
    # The server's output is untrusted: no escape sequences reach the user's terminal.
    # It may also print secrets (a token in a traceback, a URL with credentials): redacted before it reaches
    # messages, audit.jsonl and the state history.
    return _REDACT("\n".join(_printable(line[:300]) for line in lines).strip())


def _printable(line: str) -> str:
    return "".join(ch if ch.isprintable() or ch == "\t" else f"\\x{ord(ch):02x}" for ch in line)


@dataclass(frozen=True)
class ToolDiff:
    """How a candidate version's tools differ from the active version's."""

    added: list[str]
    removed: list[str]
    schema_changed: list[str]
    description_changed: list[tuple[str, str | None, str | None]]  # (tool, old, new)
    added_descriptions: dict[str, str | None] = field(default_factory=dict)  # new tool -> its description

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.schema_changed or self.description_changed)

    @property
    def needs_review(self) -> list[str]:
        """Tools whose description is text agents have not read before: new tools and changed descriptions.
        Both are where tool poisoning hides, so both need acceptance before activation."""
        return sorted({*self.added, *(n for n, _, _ in self.description_changed)})

    def lines(self) -> list[str]:
        out: list[str] = []
        for n in self.added:
            out.append(f"+ {n}: NEW TOOL: review its description (tool-poisoning risk: read it before accepting)")
            out.append(f"    new: {_one_line(self.added_descriptions.get(n))}")
        out += [f"- {n} (removed)" for n in self.removed]
        out += [f"~ {n}: input schema changed" for n in self.schema_changed]
        for n, old, new in self.description_changed:
            out.append(f"! {n}: DESCRIPTION CHANGED (tool-poisoning risk: read it before accepting)")
            out.append(f"    old: {_one_line(old)}")
            out.append(f"    new: {_one_line(new)}")
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "added": self.added,
            "removed": self.removed,
            "schema_changed": self.schema_changed,
            "description_changed": [{"tool": n, "old": o, "new": w} for n, o, w in self.description_changed],
        }


def diff_tools(old: list[ToolSnapshot], new: list[ToolSnapshot]) -> ToolDiff:
    before = {t.name: t for t in old}
    after = {t.name: t for t in new}
    common = sorted(before.keys() & after.keys())
    added = sorted(after.keys() - before.keys())
    return ToolDiff(
        added=added,
        removed=sorted(before.keys() - after.keys()),
        schema_changed=[n for n in common if _canonical(before[n].input_schema) != _canonical(after[n].input_schema)],
        description_changed=[
            (n, before[n].description, after[n].description)
            for n in common
            if (before[n].description or "").strip() != (after[n].description or "").strip()
        ],
        added_descriptions={n: after[n].description for n in added},
    )


def _canonical(schema: dict[str, Any]) -> str:
    return json.dumps(schema, sort_keys=True, separators=(",", ":"))


def _one_line(text: str | None, limit: int = 300) -> str:
    """Descriptions are untrusted text: show them on one line, control characters escaped, size capped."""
    if text is None:
        return "(none)"
    shown = "".join(ch if ch.isprintable() else f"\\u{ord(ch):04x}" for ch in text.replace("\n", " "))
    return repr(shown[:limit] + ("..." if len(shown) > limit else ""))


__all__ = ["MODES", "LaunchSpec", "SmokeResult", "ToolDiff", "diff_tools", "smoke_test"]
