#!/usr/bin/env bash
# Installs the packed package (tests/install-pkg.sh) into this Svelte app as a user would,
# type-checks it (svelte-check, strict) and builds it with Vite into dist/ (served by the e2e
# server and by tests/engines/svelte.test.mjs).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
"$here/../install-pkg.sh" "$here"
cd "$here"
npx svelte-check --tsconfig ./tsconfig.json --fail-on-warnings --output human
npx vite build --logLevel warn
echo "svelte fixture built"
