#!/usr/bin/env bash
# Packs pkg/ with `npm pack`, installs the tarball into this Angular app as a user would, and
# builds it with the Angular CLI (@angular/build, strict TypeScript and strict templates) into
# dist/, served by the e2e server.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
mkdir -p "$root/target/npm"
tarball=$(cd "$root/pkg" && npm pack --silent --pack-destination "$root/target/npm" | tail -1)
cd "$here"
npm install --no-audit --no-fund --loglevel=error
npm install --no-save --no-audit --no-fund --loglevel=error "$root/target/npm/$tarball"
NG_CLI_ANALYTICS=false npx ng build
echo "angular fixture built from $tarball"
