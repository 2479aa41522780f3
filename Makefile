# tokenwarden: one entry point.
#   make demo   set up what is missing, build, and serve the demo on http://127.0.0.1:8080
#   make test   set up what is missing, then run every test (a table of each phase's seconds
#               at the end)
#   make check  the inner loop: lint, the client's core natively, the server on SQLite
SHELL := /bin/bash
.DEFAULT_GOAL := help
export PATH := $(CURDIR)/.tools/bin:$(PATH)

# Browser tests: the page and the server they talk to (see tests/browser/runner.sh).
export WASM_BINDGEN_TEST_ADDRESS ?= 127.0.0.1:18180
export TW_TEST_SERVER_ADDR ?= 127.0.0.1:18181
export TW_TEST_SERVER ?= http://$(TW_TEST_SERVER_ADDR)
export TW_TEST_OTHER_ORIGIN ?= http://localhost:$(lastword $(subst :, ,$(TW_TEST_SERVER_ADDR)))
# The secret the test servers require in X-Test-Hooks-Secret (browser tests: at compile time).
export TW_TEST_HOOKS_SECRET ?= tokenwarden-test-hooks-secret
# geckodriver lives off PATH: wasm-bindgen-test-runner prefers it over chromedriver when both are
# on PATH, which would silently turn the Chromium run into a second Firefox run.
GECKODRIVER := $(CURDIR)/.tools/gecko/bin/geckodriver
# Every cargo command that builds the server's tests names the crate tokenwarden-dpop (with its
# features: the conformance corpus, tests/conformance/) beside it: cargo resolves the
# dependencies' features for the packages a command names, so the same set everywhere builds the
# dependencies they share once (`cargo test -p tokenwarden-dpop` alone built ~56 of them again
# with a smaller set).
SERVER_TESTS := -p tokenwarden-server -p tokenwarden-dpop --features tokenwarden-dpop/feed
# The server with its test hooks (target/debug/tokenwarden-server) for the browser, e2e, engines
# and bench phases, built as test-server's hooks group builds it: `cargo test` unifies the
# dependencies' features with the dev-dependencies', so a `cargo build` of the same server
# compiled ~115 crates again with other features (73 s on 2 cores). After this command that
# build is the one at target/debug/tokenwarden-server, whichever was built before it.
HOOKS_SERVER := cargo test $(SERVER_TESTS) --features tokenwarden-server/test-hooks --test test_hooks --no-run

.PHONY: help setup setup-node setup-tests setup-browser pkg lint lint-modules docs-check check test test-native test-server test-server-sqlite test-browser test-e2e test-engines bench bench-smoke demo

help:
	@echo "make demo   - set up, build and serve the demo on http://127.0.0.1:8080"
	@echo "make test   - set up what is missing, then run every test"
	@echo "make check  - the inner loop: lint, the client's core natively, the server on SQLite"
	@echo "make bench  - measure overhead, refresh storms, size, start-up and the server beside the peers"

setup:
	@scripts/setup.sh --node --browser --tests --bench --postgres

setup-node:
	@scripts/setup.sh --node

# The browsers, their drivers and wasm-bindgen's test runner (quick when they are there).
setup-browser:
	@scripts/setup.sh --browser

# The npm package in pkg/ (prints its size).
pkg: setup-node
	scripts/build-pkg.sh

# No import cycle among the modules of the server or of the client (a self-test first shows the
# check catches one); no protocol word of src/proto.rs spelt as a literal in the client.
lint-modules:
	node scripts/check-module-cycles.mjs --self-test
	node scripts/check-module-cycles.mjs server/src
	node scripts/check-module-cycles.mjs src
	node scripts/check-protocol-words.mjs --self-test
	node scripts/check-protocol-words.mjs
	node scripts/client-lines.mjs --self-test

# Clippy, by building: the workspace's own crates are compiled by clippy-driver (as `cargo
# clippy` does it, through RUSTC_WORKSPACE_WRAPPER; the dependencies by rustc as always) with
# `-D warnings`, in every build the test phases make, so that the dependencies are compiled once
# for both (a `cargo clippy` beside them checked all ~370 crates again: 154 s of a fresh run).
# Each cargo command below and in the test phases carries $(LINTED), so that they find lint's
# builds fresh (cargo keeps the wrapper's builds of the workspace's crates apart from plain ones:
# an edit built by a plain `cargo test` is still compiled, and so linted, here).
CLIPPY_DRIVER := $(shell command -v clippy-driver)
LINTED := RUSTC_WORKSPACE_WRAPPER=$(CLIPPY_DRIVER) CLIPPY_ARGS=-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__

lint: lint-modules
	cargo fmt --all -- --check
	@test -n "$(CLIPPY_DRIVER)" && $(CLIPPY_DRIVER) --version >/dev/null || { echo "lint: no clippy-driver on PATH (rustup component add clippy)" >&2; exit 1; }
	$(LINTED) $(HOOKS_SERVER)
	$(LINTED) cargo test $(SERVER_TESTS) --no-run
	$(LINTED) cargo test -p tokenwarden --no-run
	$(LINTED) cargo test -p tokenwarden --target wasm32-unknown-unknown --test browser --no-run
	$(LINTED) cargo test -p tokenwarden --target wasm32-unknown-unknown --lib --no-run
	$(LINTED) cargo build -p tokenwarden-example-axum
	$(LINTED) cargo build -p tokenwarden-load -p tokenwarden-example-axum

# docs/QUESTIONS.md stays true: every test it links exists with that name (no build; node only).
docs-check:
	node scripts/check-questions.mjs --self-test
	node scripts/check-questions.mjs

# The client's core, natively.
test-native:
	$(LINTED) cargo test -p tokenwarden

# The reference server over real HTTP: as released (no test hooks) on SQLite, with the
# three-instance tests (tests/fleet.rs) on PostgreSQL; the protocol, hardening, DPoP, sign-in
# code, accounts, feed, OIDC and passkey suites again on PostgreSQL (scripts/pg.sh run: one
# cluster, a database per server, stopped whatever the outcome); and the hooks' own tests in a
# build with the `test-hooks` feature. scripts/test-bins.mjs builds the three (the released
# build last: tests/binary.rs runs target/debug/tokenwarden-server, which each build replaces),
# then runs their test binaries side by side (cargo would run them one at a time). The crate
# tokenwarden-dpop's own tests run in the released build's group, its doc tests after.
test-server:
	node scripts/test-bins.mjs --self-test
	$(LINTED) scripts/pg.sh run node scripts/test-bins.mjs \
	  'hooks||$(SERVER_TESTS) --features tokenwarden-server/test-hooks --test test_hooks' \
	  'postgres|TW_TEST_BACKEND=postgres|$(SERVER_TESTS) --test protocol --test hardening --test dpop --test otp --test accounts --test feed --test oidc --test passkeys' \
	  'sqlite||$(SERVER_TESTS)'
	$(LINTED) cargo test $(SERVER_TESTS) --doc

# The client in headless Chromium, then in headless Firefox ESR, against the real server.
test-browser: pkg setup-browser
	$(LINTED) $(HOOKS_SERVER)
	$(LINTED) cargo test -p tokenwarden --target wasm32-unknown-unknown --test browser
	GECKODRIVER=$(GECKODRIVER) WASM_BINDGEN_TEST_WEBDRIVER_JSON=$(CURDIR)/tests/browser/firefox.json \
	  $(LINTED) cargo test -p tokenwarden --target wasm32-unknown-unknown --test browser

# Playwright in headless Chromium: cross-tab behaviour, the demo (its passkeys through the virtual
# authenticator, tests/e2e/passkeys.spec.ts), the npm consumers (Vite, React
# under StrictMode, Angular's HttpClient, Vue, Svelte). Before it, in Node: the React fixture's
# server-side rendering, the other bindings' (tests/bindings/), and the driver's claims decoder
# and authorize() (tests/driver/).
test-e2e: pkg
	node scripts/check-pkg-readme.mjs --self-test && node scripts/check-pkg-readme.mjs
	$(LINTED) $(HOOKS_SERVER)
	$(LINTED) cargo build -p tokenwarden-example-axum
	scripts/pg.sh run node --test tests/verify/
	tests/build-fixtures.sh consumer react angular vue svelte
	tests/consumer/node_modules/.bin/tsc -p tests/verify
	tests/consumer/node_modules/.bin/tsc -p tests/verify/tsconfig.frameworks.json
	node --test tests/react/ tests/driver/ tests/bindings/
	npx playwright test -c tests/e2e/playwright.config.ts

# The cross-tab and fault scenarios in Chromium, Firefox ESR and WebKitGTK, each through its own
# WebDriver, against the server over HTTPS (TW_ENGINES=webkit make test-engines for one); and the
# Svelte fixture there too (tests/engines/svelte.test.mjs); passkeys through WebDriver's virtual
# authenticator (tests/engines/passkeys.test.mjs). Two files at once (each starts servers of its
# own): the cross-tab file beside the faults file, then the others.
test-engines: pkg setup-browser
	$(LINTED) $(HOOKS_SERVER)
	tests/svelte/build.sh
	node --test --test-concurrency=2 --test-reporter=spec tests/engines/

# The benchmark harness with tiny sizes, against the debug server (figures meaningless).
bench-smoke: pkg
	$(LINTED) $(HOOKS_SERVER)
	$(LINTED) cargo build -p tokenwarden-load -p tokenwarden-example-axum
	TW_BENCH_SERVER=target/debug/tokenwarden-server TW_BENCH_LOAD=target/debug/tokenwarden-load \
	  TW_BENCH_AXUM=target/debug/tokenwarden-example-axum node bench/run.mjs --smoke

# The server's suites on SQLite only (no PostgreSQL, no browser), and tokenwarden-dpop's: the
# inner loop's part.
test-server-sqlite:
	$(LINTED) cargo test $(SERVER_TESTS) --lib --test conformance --test protocol --test hardening --test dpop --test otp --test accounts --test feed --test oidc --test passkeys --test binary
	$(LINTED) cargo test $(SERVER_TESTS) --doc

check: setup-tests
	@scripts/phases.sh lint test-native test-server-sqlite

# The Python packages the server's tests use (an SMTP server, other apps' password hashes).
setup-tests:
	@scripts/setup.sh --tests

test:
	@scripts/phases.sh setup docs-check lint test-native test-server test-browser test-e2e test-engines bench-smoke

# Every figure of bench/RESULTS.md, side by side with the peers (a few minutes). The benchmark
# drives the server through its test hooks, so this release build has the `test-hooks` feature
# (`make demo` rebuilds without it).
bench: pkg
	@scripts/setup.sh --node --browser --tests --bench --postgres
	cargo build --release -p tokenwarden-server --features test-hooks
	cargo build --release -p tokenwarden-load -p tokenwarden-example-axum
	node bench/run.mjs

demo: pkg
	cargo run --release -p tokenwarden-server -- --demo
