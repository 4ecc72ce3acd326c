#!/usr/bin/env bash
# Installs a real Prometheus server and promtool for the tests, from Debian's `prometheus` package (2.42 in
# bookworm), into build/prometheus: no system service, no root needed once the package lists are there.
#
#   bash scripts/install-prometheus.sh        # idempotent: does nothing when build/prometheus is complete
#
# The binaries land in build/prometheus/usr/bin (tests/prometheus.py looks there, then on PATH). When the
# package cannot be fetched this exits 1 under CI (CI=true), where the Prometheus tests must run; elsewhere it
# warns and exits 0, and those tests skip with this command in the reason.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=build/prometheus
BIN="$DEST/usr/bin"

if [ -x "$BIN/prometheus" ] && [ -x "$BIN/promtool" ]; then
  exit 0
fi

fail() {
  echo "install-prometheus: $*" >&2
  if [ "${CI:-}" = "true" ]; then
    exit 1
  fi
  echo "install-prometheus: the tests that need Prometheus will be skipped" >&2
  exit 0
}

command -v apt-get >/dev/null 2>&1 && command -v dpkg-deb >/dev/null 2>&1 ||
  fail "apt-get/dpkg-deb not found (not Debian/Ubuntu): install Prometheus 2.x and put prometheus and promtool on PATH"

# Refresh the package lists only when the package is unknown, and only as root (apt-get update needs it).
if ! apt-cache show prometheus >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ]; then
    apt-get update -qq >/dev/null || fail "apt-get update failed: check the network or the apt sources"
  else
    fail "apt does not know the prometheus package: run 'sudo apt-get update' once, then rerun this script"
  fi
fi

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
# apt-get download drops privileges to _apt as root: let it write into the work directory.
chmod 755 "$WORK"
(cd "$WORK" && apt-get download -qq prometheus >/dev/null 2>&1) ||
  fail "apt-get download prometheus failed: check the network or the apt sources"
DEB=$(ls "$WORK"/prometheus_*.deb)

# Unpack next to the destination, then move into place, so an interrupted run never leaves half a tree.
rm -rf "$DEST.partial"
mkdir -p "$DEST.partial"
dpkg-deb -x "$DEB" "$DEST.partial"
[ -x "$DEST.partial/usr/bin/prometheus" ] && [ -x "$DEST.partial/usr/bin/promtool" ] ||
  fail "$(basename "$DEB") has no usr/bin/prometheus and usr/bin/promtool"
rm -rf "$DEST"
mv "$DEST.partial" "$DEST"
echo "installed $("$BIN/prometheus" --version 2>&1 | head -n 1) and promtool into $DEST (from $(basename "$DEB"))"
