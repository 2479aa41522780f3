#!/usr/bin/env bash
# Packs pkg/ with `npm pack`, installs the tarball into this Svelte app as a user would,
# type-checks it (svelte-check, strict) and builds it with Vite into dist/ (served by the e2e
# server and by tests/engines/svelte.test.mjs).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
mkdir -p "$root/target/npm"
tarball=$(cd "$root/pkg" && npm pack --silent --pack-destination "$root/target/npm" | tail -1)
cd "$here"
npm install --no-audit --no-fund --loglevel=error
npm install --no-save --no-audit --no-fund --loglevel=error "$root/target/npm/$tarball"
npx svelte-check --tsconfig ./tsconfig.json --fail-on-warnings --output human
npx vite build --logLevel warn
echo "svelte fixture built from $tarball"
