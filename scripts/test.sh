#!/usr/bin/env bash
# The test command (README: `make test`; CI: .ci/run). Sets up what the tests need, runs pytest.
# Real components only: the MCP Inspector CLI from npm is installed into build/inspector on first run.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}

INSPECTOR_VERSION=2.12.0
if command -v npm >/dev/null 2>&1; then
  if [ ! -x build/inspector/node_modules/.bin/mcp-inspector ]; then
    echo "installing @modelcontextprotocol/inspector@${INSPECTOR_VERSION} (npm) into build/inspector"
    mkdir -p build/inspector
    npm install --no-audit --no-fund --loglevel=error --prefix build/inspector \
      "@modelcontextprotocol/inspector@${INSPECTOR_VERSION}" >/dev/null
  fi
  export OBSMCP_INSPECTOR="$PWD/build/inspector/node_modules/.bin/mcp-inspector"
fi

# A real Prometheus server and promtool (Debian's package, unpacked into build/prometheus; no service started).
bash scripts/install-prometheus.sh

# Grafana's published dashboard schema (npm @grafana/schema) and tsc, for tests/test_dashboards.py.
bash scripts/install-grafana-schema.sh
bash scripts/install-chromium.sh  # Debian chromium for the status page test (root: apt-get install)
bash scripts/install-alertmanager.sh  # a real Alertmanager for the alert webhook tests (build/alertmanager)

set +e
"$VENV/bin/pytest" "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure here" >&2
  exit 1
fi
exit "$rc"
