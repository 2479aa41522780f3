#!/usr/bin/env bash
# Packs pkg/ with `npm pack`, installs the tarball into this React app as a user would,
# type-checks it (strict), builds the browser app into dist/ (served by the e2e server) in
# development mode, so that StrictMode double-mounts for real, and the server-rendering entry
# into dist-ssr/ (run by ssr.test.mjs).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
mkdir -p "$root/target/npm"
tarball=$(cd "$root/pkg" && npm pack --silent --pack-destination "$root/target/npm" | tail -1)
cd "$here"
npm install --no-audit --no-fund --loglevel=error
npm install --no-save --no-audit --no-fund --loglevel=error "$root/target/npm/$tarball"
npx tsc -p tsconfig.json
NODE_ENV=development npx vite build --mode development --logLevel warn
npx vite build --ssr src/server.tsx --outDir dist-ssr --logLevel warn
echo "react fixture built from $tarball"
