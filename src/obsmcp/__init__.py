"""obsmcp: an MCP server that gives AI agents fast, safe, token-efficient access to telemetry."""

__version__ = "0.1.0"
