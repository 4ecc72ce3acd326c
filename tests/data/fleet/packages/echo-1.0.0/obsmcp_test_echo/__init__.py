"""obsmcp-test-echo 1.0.0: MCP test server for obsmcp fleet: echo tools.

Dependency-free: JSON-RPC 2.0 over stdio, one message per line (MCP 2025-11-25 and 2026-07-28).
"""

import json
import sys

NAME = "obsmcp-test-echo"
__version__ = "1.0.0"

TOOLS = [
    {
        "name": "echo",
        "description": "Echo the text back.",
        "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
    },
    {
        "name": "add",
        "description": "Add two integers.",
        "inputSchema": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
        },
    },
    {
        "name": "reverse",
        "description": "Reverse the text.",
        "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
    },
]


def call(name, args):
    if name == "add":
        return int(args.get("a", 0)) + int(args.get("b", 0))
    text = str(args.get("text", ""))
    return text[::-1] if name == "reverse" else text


PROTOCOL_MODERN = "2026-07-28"
PROTOCOL_LEGACY = ("2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05")
INFO = {"name": NAME, "version": __version__}


def _result(msg):
    method, params = msg.get("method"), msg.get("params") or {}
    if method == "server/discover":
        return {"supportedVersions": [PROTOCOL_MODERN], "capabilities": {"tools": {}}}
    if method == "initialize":
        asked = params.get("protocolVersion")
        version = asked if asked in PROTOCOL_LEGACY else PROTOCOL_LEGACY[0]
        return {"protocolVersion": version, "capabilities": {"tools": {}}, "serverInfo": INFO}
    if method == "ping":
        return {}
    if method == "tools/list":
        return {"tools": TOOLS}
    if method == "tools/call":
        name, args = params.get("name"), params.get("arguments") or {}
        if name not in {t["name"] for t in TOOLS}:
            raise LookupError(f"unknown tool: {name}")
        return {"content": [{"type": "text", "text": str(call(name, args))}], "isError": False}
    raise LookupError(f"method not found: {method}")


def handle(msg):
    """One JSON-RPC message in, the response out (None for notifications)."""
    if "id" not in msg or "method" not in msg:
        return None
    try:
        result = _result(msg)
    except LookupError as exc:
        return {"jsonrpc": "2.0", "id": msg["id"], "error": {"code": -32601, "message": str(exc)}}
    meta = (msg.get("params") or {}).get("_meta") or {}
    if meta.get("io.modelcontextprotocol/protocolVersion") == PROTOCOL_MODERN or msg["method"] == "server/discover":
        result.update(resultType="complete", _meta={"io.modelcontextprotocol/serverInfo": INFO})
        if msg["method"] in ("server/discover", "tools/list"):  # cacheable results carry a cache hint
            result.update(cacheScope="private", ttlMs=0)
    return {"jsonrpc": "2.0", "id": msg["id"], "result": result}


def main():
    if "--version" in sys.argv[1:]:
        print(f"{NAME} {__version__}")
        return
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            msg = json.loads(line)
        except ValueError:
            reply = {"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "parse error"}}
        else:
            reply = handle(msg) if isinstance(msg, dict) else None
        if reply is not None:
            sys.stdout.write(json.dumps(reply) + "\n")
            sys.stdout.flush()
