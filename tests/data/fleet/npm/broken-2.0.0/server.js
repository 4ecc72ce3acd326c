#!/usr/bin/env node
// @obsmcp-test/broken 2.0.0: a release that fails the MCP handshake (answers garbage, then exits 3).
'use strict';

if (process.argv.includes('--version')) {
  console.log('@obsmcp-test/broken 2.0.0');
} else {
  process.stdin.once('data', () => {
    process.stdout.write('this is not JSON-RPC\n');
    process.stderr.write('@obsmcp-test/broken 2.0.0: startup failed (a deliberately broken release)\n');
    process.exit(3);
  });
}
