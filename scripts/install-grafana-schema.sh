#!/usr/bin/env bash
# Installs Grafana's published dashboard schema types (npm @grafana/schema) and the TypeScript compiler, pinned,
# into build/grafana-schema, for tests/test_dashboards.py: generated dashboards are type-checked against them
# with `tsc --noEmit` (Grafana itself cannot be installed here: no Debian package, no container engine).
#
#   bash scripts/install-grafana-schema.sh     # idempotent: does nothing when build/grafana-schema is complete
#
# When npm or the registry is unavailable this exits 1 under CI (CI=true), where the schema tests must run;
# elsewhere it warns and exits 0, and those tests skip with this command in the reason.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=build/grafana-schema
SCHEMA_VERSION=13.2.3      # @grafana/schema: Grafana 13's dashboard and panel option types
TYPESCRIPT_VERSION=5.9.3

if [ -x "$DEST/node_modules/.bin/tsc" ] &&
  grep -q "\"version\": \"$SCHEMA_VERSION\"" "$DEST/node_modules/@grafana/schema/package.json" 2>/dev/null; then
  exit 0
fi

fail() {
  echo "install-grafana-schema: $*" >&2
  if [ "${CI:-}" = "true" ]; then
    exit 1
  fi
  echo "install-grafana-schema: the dashboard schema tests will be skipped" >&2
  exit 0
}

command -v npm >/dev/null 2>&1 || fail "npm not found: install Node.js (20 or later) and npm"
rm -rf "$DEST.partial"
mkdir -p "$DEST.partial"
npm install --no-audit --no-fund --loglevel=error --prefix "$DEST.partial" \
  "@grafana/schema@$SCHEMA_VERSION" "typescript@$TYPESCRIPT_VERSION" >/dev/null ||
  fail "npm install @grafana/schema@$SCHEMA_VERSION typescript@$TYPESCRIPT_VERSION failed: check the network"
rm -rf "$DEST"
mv "$DEST.partial" "$DEST"
echo "installed @grafana/schema@$SCHEMA_VERSION and typescript@$TYPESCRIPT_VERSION into $DEST"
