#!/usr/bin/env bash
# Packs pkg/ with `npm pack` and installs the tarball into the fixture app DIR as a user would
# (after the app's own locked dependencies), so that every fixture tests what npm would ship.
#   tests/install-pkg.sh DIR      packs pkg/, or takes the tarball TW_PKG_TARBALL names
#   tests/install-pkg.sh --pack   packs pkg/ and prints the tarball's path (for TW_PKG_TARBALL)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
pack() {
  mkdir -p "$root/target/npm"
  echo "$root/target/npm/$(cd "$root/pkg" && npm pack --silent --pack-destination "$root/target/npm" | tail -1)"
}
if [ "${1:-}" = --pack ]; then pack; exit; fi
tarball=${TW_PKG_TARBALL:-$(pack)}
cd "$1"
npm install --no-audit --no-fund --loglevel=error
npm install --no-save --no-audit --no-fund --loglevel=error "$tarball"
echo "$(basename "$1"): installed $(basename "$tarball")"
