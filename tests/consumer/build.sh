#!/usr/bin/env bash
# Installs the packed package (tests/install-pkg.sh) into this Vite app as a user would,
# type-checks it (strict) and builds it into dist/, which the e2e server then serves.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
"$here/../install-pkg.sh" "$here"
cd "$here"
npx tsc -p tsconfig.json
npx vite build --logLevel warn
echo "consumer fixture built"
