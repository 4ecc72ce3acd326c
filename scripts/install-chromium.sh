#!/usr/bin/env bash
# Installs Debian's Chromium for the status page's browser test (tests/test_status_page.py drives it with
# Playwright for Python through executable_path=/usr/bin/chromium; Playwright's own browser download is never
# used).
#
#   bash scripts/install-chromium.sh        # idempotent: does nothing when /usr/bin/chromium runs
#
# Needs root (apt-get install), as in CI. When Chromium cannot be installed this exits 1 under CI (CI=true),
# where the browser test must run; elsewhere it warns and exits 0, and that test skips with this command in
# its reason.
set -euo pipefail

BIN=/usr/bin/chromium

if [ -x "$BIN" ] && "$BIN" --version >/dev/null 2>&1; then
  exit 0
fi

fail() {
  echo "install-chromium: $*" >&2
  if [ "${CI:-}" = "true" ]; then
    exit 1
  fi
  echo "install-chromium: the status page's browser test will be skipped" >&2
  exit 0
}

command -v apt-get >/dev/null 2>&1 || fail "apt-get not found (not Debian/Ubuntu): install Chromium at $BIN"
[ "$(id -u)" = "0" ] || fail "installing Chromium needs root: run 'sudo bash scripts/install-chromium.sh'"

export DEBIAN_FRONTEND=noninteractive
# Refresh the package lists only when the package is unknown.
if ! apt-cache show chromium >/dev/null 2>&1; then
  apt-get update -qq >/dev/null || fail "apt-get update failed: check the network or the apt sources"
fi
apt-get install -y -qq --no-install-recommends chromium >/dev/null ||
  fail "apt-get install chromium failed: check the network or the apt sources"
"$BIN" --version >/dev/null 2>&1 || fail "$BIN was installed but does not run"
echo "installed $("$BIN" --version 2>/dev/null | head -n 1)"
