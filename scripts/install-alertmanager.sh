#!/usr/bin/env bash
# Installs a real Alertmanager (and amtool) for the tests, from Debian's `prometheus-alertmanager` package
# (0.25 in bookworm), into build/alertmanager: no system service, no root needed once the package lists are there.
#
#   bash scripts/install-alertmanager.sh      # idempotent: does nothing when build/alertmanager is complete
#
# The binaries land in build/alertmanager/usr/bin (tests/alertmanager.py looks there, then on PATH). When the
# package cannot be fetched this exits 1 under CI (CI=true), where the Alertmanager tests must run; elsewhere it
# warns and exits 0, and those tests skip with this command in the reason.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=build/alertmanager
BIN="$DEST/usr/bin"

if [ -x "$BIN/prometheus-alertmanager" ] && [ -x "$BIN/amtool" ]; then
  exit 0
fi

fail() {
  echo "install-alertmanager: $*" >&2
  if [ "${CI:-}" = "true" ]; then
    exit 1
  fi
  echo "install-alertmanager: the tests that need Alertmanager will be skipped" >&2
  exit 0
}

command -v apt-get >/dev/null 2>&1 && command -v dpkg-deb >/dev/null 2>&1 ||
  fail "apt-get/dpkg-deb not found (not Debian/Ubuntu): install Alertmanager 0.2x and put prometheus-alertmanager and amtool on PATH"

# Refresh the package lists only when the package is unknown, and only as root (apt-get update needs it).
if ! apt-cache show prometheus-alertmanager >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ]; then
    apt-get update -qq >/dev/null || fail "apt-get update failed: check the network or the apt sources"
  else
    fail "apt does not know the prometheus-alertmanager package: run 'sudo apt-get update' once, then rerun this script"
  fi
fi

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
# apt-get download drops privileges to _apt as root: let it write into the work directory.
chmod 777 "$WORK"
(cd "$WORK" && apt-get download -qq prometheus-alertmanager >/dev/null 2>&1) ||
  fail "apt-get download prometheus-alertmanager failed: check the network or the apt sources"
DEB=$(ls "$WORK"/prometheus-alertmanager_*.deb)

# Unpack next to the destination, then move into place, so an interrupted run never leaves half a tree.
rm -rf "$DEST.partial"
mkdir -p "$DEST.partial"
dpkg-deb -x "$DEB" "$DEST.partial"
[ -x "$DEST.partial/usr/bin/prometheus-alertmanager" ] && [ -x "$DEST.partial/usr/bin/amtool" ] ||
  fail "$(basename "$DEB") has no usr/bin/prometheus-alertmanager and usr/bin/amtool"
# Debian's build reads its notification templates and web UI from /usr/share/prometheus/alertmanager, a path
# compiled into the binary, and will not start without default.tmpl there. Installing into /usr/share is what
# this script avoids, so the copy in build/ reads them from ./am-share instead (a relative path of the same
# length, so the binary's layout is unchanged): tests/alertmanager.py starts it in a directory where am-share
# links to build/alertmanager/usr/share/prometheus/alertmanager.
SHARE=/usr/share/prometheus/alertmanager
RELOCATED=./././././././././././././am-share
[ ${#SHARE} -eq ${#RELOCATED} ] || fail "internal: relocated path length differs"
if grep -qa "$SHARE" "$DEST.partial/usr/bin/prometheus-alertmanager"; then
  SIZE=$(stat -c %s "$DEST.partial/usr/bin/prometheus-alertmanager")
  LC_ALL=C perl -0777 -pi -e "s{\Q$SHARE\E}{$RELOCATED}g" "$DEST.partial/usr/bin/prometheus-alertmanager"
  [ "$(stat -c %s "$DEST.partial/usr/bin/prometheus-alertmanager")" = "$SIZE" ] || fail "relocating $SHARE changed the binary's size"
fi
rm -rf "$DEST"
mv "$DEST.partial" "$DEST"
echo "installed $("$BIN/prometheus-alertmanager" --version 2>&1 | head -n 1) and amtool into $DEST (from $(basename "$DEB"))"
