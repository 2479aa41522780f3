#!/usr/bin/env bash
# Packs pkg/ with `npm pack` and installs the tarball into the fixture app DIR as a user would
# (after the app's own locked dependencies), so that every fixture tests what npm would ship.
#   tests/install-pkg.sh DIR
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
mkdir -p "$root/target/npm"
tarball=$(cd "$root/pkg" && npm pack --silent --pack-destination "$root/target/npm" | tail -1)
cd "$1"
npm install --no-audit --no-fund --loglevel=error
npm install --no-save --no-audit --no-fund --loglevel=error "$root/target/npm/$tarball"
echo "$(basename "$1"): installed $tarball"
