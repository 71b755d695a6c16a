#!/usr/bin/env bash
# THE test command: dependencies, fixtures, release build, then every test of the workspace
# (unit, property and the end-to-end tests that drive target/release/sluice with real
# clients: ffmpeg/ffprobe, GStreamer, rtmpdump). Exits non-zero on any failure.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

start=$SECONDS
step() { echo; echo "=== [test.sh +$((SECONDS - start))s] $*"; }

step "test dependencies"
scripts/install-test-deps.sh

TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
export SLUICE_FIXTURES="${SLUICE_FIXTURES:-$TARGET_DIR/fixtures}"
step "fixtures into $SLUICE_FIXTURES"
scripts/make-fixtures.sh "$SLUICE_FIXTURES"

step "cargo build --release --workspace"
cargo build --release --workspace

export SLUICE_BIN="${SLUICE_BIN:-$TARGET_DIR/release/sluice}"
[[ -x "$SLUICE_BIN" ]] || { echo "test.sh: ERROR: $SLUICE_BIN not built" >&2; exit 1; }
export SLUICE_DEMO="${SLUICE_DEMO:-$ROOT/fixtures/demo.flv}"

step "cargo test --release --workspace (SLUICE_BIN=$SLUICE_BIN)"
cargo test --release --workspace --no-fail-fast

# The fuzz targets are a crate of their own (cargo-fuzz builds them with nightly flags); a
# check here keeps them compiling as the parsers they drive change.
step "fuzz targets compile (cargo check in fuzz/)"
(cd fuzz && cargo check --bins --examples)

step "all tests passed in $((SECONDS - start)) s"
