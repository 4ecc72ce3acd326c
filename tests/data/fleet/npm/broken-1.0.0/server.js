#!/usr/bin/env node
// @obsmcp-test/broken 1.0.0: a dependency-free MCP server (JSON-RPC 2.0 over stdio, one message per line).
'use strict';

const NAME = '@obsmcp-test/broken';
const VERSION = '1.0.0';
const TOOLS = [
  {
    "name": "status",
    "description": "Report that the server is healthy.",
    "inputSchema": {
      "type": "object",
      "properties": {}
    }
  }
];

function call() {
  return 'ok';
}

const PROTOCOL_MODERN = '2026-07-28';
const PROTOCOL_LEGACY = ['2025-11-25', '2025-06-18', '2025-03-26', '2024-11-05'];
const INFO = { name: NAME, version: VERSION };

function result(msg) {
  const params = msg.params || {};
  switch (msg.method) {
    case 'server/discover':
      return { supportedVersions: [PROTOCOL_MODERN], capabilities: { tools: {} } };
    case 'initialize': {
      const asked = params.protocolVersion;
      const version = PROTOCOL_LEGACY.includes(asked) ? asked : PROTOCOL_LEGACY[0];
      return { protocolVersion: version, capabilities: { tools: {} }, serverInfo: INFO };
    }
    case 'ping':
      return {};
    case 'tools/list':
      return { tools: TOOLS };
    case 'tools/call': {
      if (!TOOLS.some((t) => t.name === params.name)) throw new Error(`unknown tool: ${params.name}`);
      return { content: [{ type: 'text', text: String(call(params.name, params.arguments || {})) }], isError: false };
    }
    default:
      throw new Error(`method not found: ${msg.method}`);
  }
}

function handle(msg) {
  if (msg === null || typeof msg !== 'object' || !('id' in msg) || !('method' in msg)) return null;
  let res;
  try {
    res = result(msg);
  } catch (err) {
    return { jsonrpc: '2.0', id: msg.id, error: { code: -32601, message: err.message } };
  }
  const meta = (msg.params && msg.params._meta) || {};
  if (meta['io.modelcontextprotocol/protocolVersion'] === PROTOCOL_MODERN || msg.method === 'server/discover') {
    Object.assign(res, { resultType: 'complete', _meta: { 'io.modelcontextprotocol/serverInfo': INFO } });
    if (msg.method === 'server/discover' || msg.method === 'tools/list') Object.assign(res, { cacheScope: 'private', ttlMs: 0 });
  }
  return { jsonrpc: '2.0', id: msg.id, result: res };
}

if (process.argv.includes('--version')) {
  console.log(`${NAME} ${VERSION}`);
} else {
  let buf = '';
  process.stdin.setEncoding('utf8');
  process.stdin.on('data', (chunk) => {
    buf += chunk;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i).trim();
      buf = buf.slice(i + 1);
      if (!line) continue;
      let reply;
      try {
        reply = handle(JSON.parse(line));
      } catch (err) {
        reply = { jsonrpc: '2.0', id: null, error: { code: -32700, message: 'parse error' } };
      }
      if (reply) process.stdout.write(JSON.stringify(reply) + '\n');
    }
  });
}
