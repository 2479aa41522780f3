#!/usr/bin/env bash
# Builds the fixture apps named (tests/NAME/build.sh) two at a time, from one tarball of pkg/
# packed first (tests/install-pkg.sh); prints each one's output whole, and fails if any failed.
#   tests/build-fixtures.sh NAME...
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TW_PKG_TARBALL=$("$root/tests/install-pkg.sh" --pack)
export TW_PKG_TARBALL
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
printf '%s\n' "$@" | xargs -P 2 -I{} bash -c '"$0/tests/$1/build.sh" > "$2/$1.log" 2>&1; echo $? > "$2/$1.rc"' "$root" {} "$logs"
status=0
for name in "$@"; do
  echo "---- fixture $name ----"
  cat "$logs/$name.log"
  if [ "$(cat "$logs/$name.rc" 2>/dev/null)" != 0 ]; then echo "fixture $name: build FAILED"; status=1; fi
done
exit $status
