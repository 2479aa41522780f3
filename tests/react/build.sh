#!/usr/bin/env bash
# Installs the packed package (tests/install-pkg.sh) into this React app as a user would,
# type-checks it (strict), builds the browser app into dist/ (served by the e2e server) in
# development mode, so that StrictMode double-mounts for real, and the server-rendering entry
# into dist-ssr/ (run by ssr.test.mjs).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
"$here/../install-pkg.sh" "$here"
cd "$here"
npx tsc -p tsconfig.json
NODE_ENV=development npx vite build --mode development --logLevel warn
npx vite build --ssr src/server.tsx --outDir dist-ssr --logLevel warn
echo "react fixture built"
