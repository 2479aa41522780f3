#!/usr/bin/env bash
# Installs the packed package (tests/install-pkg.sh) into this Vue app as a user would,
# type-checks it (vue-tsc, strict) and builds it with Vite into dist/ (served by the e2e server).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
"$here/../install-pkg.sh" "$here"
cd "$here"
npx vue-tsc -p tsconfig.json
npx vite build --logLevel warn
echo "vue fixture built"
