"""Fleet: the lifecycle of the MCP servers configured on this machine (discover, check, update, roll back)."""
