#!/usr/bin/env bash
# Cargo runner for wasm32 tests: starts a real tokenwarden-server with test hooks and short
# access tokens, runs the test module in a headless browser, and stops the server. The browser
# is Chromium (chromedriver on PATH), or Firefox with GECKODRIVER=<path> and
# WASM_BINDGEN_TEST_WEBDRIVER_JSON=tests/browser/firefox.json (see the Makefile).
# The page and server addresses must match what the tests were compiled with (see Makefile).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
page=${WASM_BINDGEN_TEST_ADDRESS:-127.0.0.1:18180}
server=${TW_TEST_SERVER_ADDR:-127.0.0.1:18181}
export WASM_BINDGEN_TEST_ADDRESS=$page
export WASM_BINDGEN_TEST_TIMEOUT=${WASM_BINDGEN_TEST_TIMEOUT:-300}
export WASM_BINDGEN_TEST_WEBDRIVER_JSON=${WASM_BINDGEN_TEST_WEBDRIVER_JSON:-$root/webdriver.json}
export TMPDIR=${TMPDIR_BROWSER:-$root/target/browser-tmp}
mkdir -p "$TMPDIR"

# Built with `--features test-hooks` (Makefile); the tests were compiled with the same secret.
# TW_SERVER_BINARY: a copy of that build elsewhere (a shared tree where another build may replace
# target/debug's without the feature).
"${TW_SERVER_BINARY:-$root/target/debug/tokenwarden-server}" --bind "$server" --test-hooks \
  --test-hooks-secret "${TW_TEST_HOOKS_SECRET:-tokenwarden-test-hooks-secret}" \
  --database-url sqlite::memory: --access-ttl-secs 4 \
  --allowed-origin "http://$page" --login-ip-per-minute 100000 \
  --www-dir /nonexistent --pkg-dir "$root/pkg" >"$TMPDIR/server.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  curl -fs "http://$server/healthz" >/dev/null 2>&1 && break
  kill -0 $pid 2>/dev/null || { cat "$TMPDIR/server.log"; exit 1; }
  sleep 0.1
done
wasm-bindgen-test-runner "$@"
