# tokenwarden: one entry point. `make test` sets up what is missing and runs every test.
SHELL := /bin/bash
.DEFAULT_GOAL := help

.PHONY: help test lint test-server demo

help:
	@echo "make demo   - build and start the reference server with the demo page on http://127.0.0.1:8080"
	@echo "make test   - set up what is missing, then run every test"

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

test-server:
	cargo test -p tokenwarden-server

test: lint test-server

demo:
	cargo run --release -p tokenwarden-server -- --demo
