#!/usr/bin/env bash
# Installs whatever the build and tests need and is missing; fast when all is there.
#   scripts/setup.sh [--node] [--browser] [--tests] [--bench] [--postgres]
#     always     the Rust wasm target
#     --node     the npm packages (wasm-opt for the package build, Playwright)
#     --tests    Debian's python3-aiosmtpd (the SMTP server the sign-in-code tests deliver to),
#                python3-bcrypt and python3-argon2 (other apps' password hashes, for the import
#                tests): with apt-get, so root or sudo (`make demo` needs none of them)
#     --browser  the browsers and their drivers: Chromium + chromedriver, Firefox ESR, WebKitGTK's
#                WebKitWebDriver with Xvfb, from Debian; geckodriver from crates.io into
#                .tools/gecko/ (off PATH, see the Makefile); wasm-bindgen-cli (its test runner,
#                at the Cargo.lock version) into .tools/bin/; openssl for the test certificate
# The tools built from crates.io build side by side, in the background while the packages
# install, unoptimised (they drive browsers and read a test module: a fresh machine's setup took
# 305 s with them optimised one after the other).
#     --bench    wrk from Debian and the peers' npm packages in bench/
#     --postgres PostgreSQL from Debian, for the server's PostgreSQL tests and benchmark; the
#                packaged cluster is not started (tests run their own: scripts/pg.sh)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
say() { printf '\033[1msetup:\033[0m %s\n' "$*"; }
# Tools built from crates.io are kept per version outside the clone too, so another clone on
# this machine (CI's fresh one) copies them instead of compiling them again.
cache=${TW_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tokenwarden-tools}

want_node=false; want_browser=false; want_tests=false; want_bench=false; want_postgres=false
for arg in "$@"; do
  case "$arg" in
    --node) want_node=true ;;
    --browser) want_browser=true ;;
    --tests) want_tests=true ;;
    --bench) want_bench=true ;;
    --postgres) want_postgres=true ;;
    *) echo "usage: scripts/setup.sh [--node] [--browser] [--tests] [--bench] [--postgres]" >&2; exit 2 ;;
  esac
done

# A clean `make test` writes about 4 GB (target/, browsers' profiles, PostgreSQL clusters); a full
# disk shows up much later as an odd failure (PostgreSQL's "No space left on device"), so say it now.
free_kb=$(df -Pk "$root" 2>/dev/null | awk 'NR == 2 { print $4 }' || true)
if [ -n "$free_kb" ] && [ "$free_kb" -lt $((6 * 1024 * 1024)) ]; then
  say "WARNING: only $((free_kb / 1024)) MB free on the disk of $root; a clean build and test run needs about 6 GB"
fi

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
  say "adding the wasm32-unknown-unknown target"
  rustup target add wasm32-unknown-unknown
fi

# Optional: nightly + rust-src lets scripts/build-pkg.sh drop panic machinery (smaller .wasm).
if rustup toolchain list 2>/dev/null | grep -q '^nightly' &&
   ! rustup component list --toolchain nightly --installed 2>/dev/null | grep -q '^rust-src'; then
  say "adding rust-src to nightly (for a smaller package; optional)"
  rustup component add rust-src --toolchain nightly >/dev/null 2>&1 || say "could not; the package will build on stable"
fi

# Tools from crates.io: `tool NAME VERSION BINARY DEST-DIR [cargo install args]` copies NAME's
# binaries from the cache into DEST-DIR, building them there first in the background if the
# cache has no BINARY that runs; `tools_wait` waits for those builds and stops setup if one failed
# (its log shown). A build goes to a directory of its own, moved into place once it is whole; the
# builds still running when setup stops early are stopped with it.
tool_pids=(); tool_logs=()
tool() {
  local name=$1 version=$2 binary=$3 dest=$4; shift 4
  local dir="$cache/$name-$version"
  if "$dir/bin/$binary" --version >/dev/null 2>&1; then mkdir -p "$dest"; cp "$dir/bin/"* "$dest/"; return; fi
  say "building $name $version into $cache (in the background, about 90 s)"
  mkdir -p "$cache"
  local log="$cache/$name-$version.log"
  (
    tmp="$dir.tmp.$BASHPID"
    rm -rf "$tmp"
    CARGO_PROFILE_RELEASE_OPT_LEVEL=0 CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_DEBUG=false \
      cargo install "$name" --version "$version" --root "$tmp" --quiet "$@"
    "$tmp/bin/$binary" --version
    rm -rf "$dir" && mv "$tmp" "$dir"
    mkdir -p "$dest" && cp "$dir/bin/"* "$dest/"
  ) >"$log" 2>&1 &
  tool_pids+=($!); tool_logs+=("$log")
}
tools_wait() {
  local i
  for i in "${!tool_pids[@]}"; do
    if ! wait "${tool_pids[$i]}"; then
      cat "${tool_logs[$i]}" >&2
      say "building a tool failed: ${tool_logs[$i]}"
      exit 1
    fi
  done
  tool_pids=()
}
policy=""
if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
cleanup() {
  local pid
  for pid in "${tool_pids[@]}"; do pkill -P "$pid" 2>/dev/null || true; kill "$pid" 2>/dev/null || true; done
  [ -z "$policy" ] || $sudo rm -f "$policy"
}
trap cleanup EXIT
if $want_browser; then
  # wasm-bindgen-cli must match the wasm-bindgen crate in Cargo.lock exactly. No --locked: its
  # lock file wants a crate version the registry here does not have.
  want=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/[^0-9.]/, "", $0); print; exit }' Cargo.lock)
  have=$("$root/.tools/bin/wasm-bindgen-test-runner" --version 2>/dev/null | awk '{print $2}' || true)
  [ "$want" = "$have" ] || tool wasm-bindgen-cli "$want" wasm-bindgen-test-runner "$root/.tools/bin"
  # geckodriver is not packaged by Debian; crates.io has it.
  "$root/.tools/gecko/bin/geckodriver" --version >/dev/null 2>&1 ||
    tool geckodriver 0.37.1 geckodriver "$root/.tools/gecko/bin" --locked
fi

# Debian's packages: what is missing, in one apt-get.
pkgs=()
# The server's sign-in-code tests and the e2e test start aiosmtpd with Debian's python (the
# first python3 on PATH may be another build that does not see Debian's packages).
if $want_tests && ! /usr/bin/python3 -c 'import aiosmtpd' >/dev/null 2>&1; then
  say "to install: python3-aiosmtpd (the SMTP server of the sign-in-code tests)"
  pkgs+=(python3-aiosmtpd)
fi
# The import tests make password hashes the way other apps do (bcrypt, argon2-cffi, hashlib).
if $want_tests && ! /usr/bin/python3 -c 'import bcrypt, argon2' >/dev/null 2>&1; then
  say "to install: python3-bcrypt and python3-argon2 (password hashes of other apps, for the import tests)"
  pkgs+=(python3-bcrypt python3-argon2)
fi
if $want_browser; then
  for pair in chromium:chromium chromedriver:chromium-driver firefox-esr:firefox-esr \
              WebKitWebDriver:webkit2gtk-driver xvfb-run:xvfb xauth:xauth openssl:openssl; do
    command -v "${pair%%:*}" >/dev/null || pkgs+=("${pair#*:}")
  done
fi
if $want_bench && ! command -v wrk >/dev/null; then pkgs+=(wrk); fi
if $want_postgres && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  say "to install: postgresql (the packaged cluster is not started)"
  pkgs+=(postgresql)
fi
# The test cluster's certificate (scripts/pg.sh).
if $want_postgres && ! command -v openssl >/dev/null; then pkgs+=(openssl); fi
if [ ${#pkgs[@]} -gt 0 ]; then
  say "installing ${pkgs[*]}"
  # A policy-rc.d that answers 101 keeps a package (PostgreSQL) from starting its own service
  # (containers usually have one already; a machine that does not gets it only for this).
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    policy=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
    $sudo chmod +x "$policy"
  fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${pkgs[@]}" >/dev/null
fi
if $want_bench; then
  if [ ! -d bench/node_modules ] || [ bench/package-lock.json -nt bench/node_modules/.package-lock.json ]; then
    say "installing the peers' npm packages (bench/)"
    (cd bench && npm install --no-audit --no-fund --loglevel=error)
  fi
fi

if $want_node; then
  if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    say "installing npm packages"
    npm ci --no-audit --no-fund --loglevel=error
  fi
  # The frameworks' type declarations for tests/verify/frameworks.ts, apart: in the workspace's
  # node_modules, every fixture's tsc would take them in (and @types/node into browser code).
  if [ ! -d tests/verify/node_modules ] || [ tests/verify/package-lock.json -nt tests/verify/node_modules/.package-lock.json ]; then
    say "installing the frameworks' type declarations (tests/verify/)"
    (cd tests/verify && npm ci --no-audit --no-fund --loglevel=error)
  fi
fi

tools_wait
