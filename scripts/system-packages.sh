#!/usr/bin/env bash
# Debian packages the test suite needs: a Postgres server (started by the tests themselves) and
# Chromium for the browser tests (Playwright drives /usr/bin/chromium; never `playwright install`).
# Installs only what is missing; needs root (or sudo).
set -euo pipefail
missing=()
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
{ command -v chromium >/dev/null || [ -x /usr/bin/chromium ]; } || missing+=(chromium)
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "installing Debian packages: ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The tests start their own throw-away clusters; the packaged default one is not needed.
$SUDO sh -c 'command -v pg_ctlcluster >/dev/null && pg_lsclusters -h | while read v c _; do pg_ctlcluster "$v" "$c" stop || true; done' || true
