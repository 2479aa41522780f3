#!/usr/bin/env bash
# Installs the packed package (tests/install-pkg.sh) into this Angular app as a user would, and
# builds it with the Angular CLI (@angular/build, strict TypeScript and strict templates) into
# dist/, served by the e2e server.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
"$here/../install-pkg.sh" "$here"
cd "$here"
NG_CLI_ANALYTICS=false npx ng build
echo "angular fixture built"
