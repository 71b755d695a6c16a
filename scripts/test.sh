#!/usr/bin/env bash
# THE test command: dependencies, fixtures, release build, then every test of the workspace
# (unit, property and the end-to-end tests that drive target/release/sluice with real
# clients: ffmpeg/ffprobe, GStreamer, rtmpdump), then every fuzz target for a short while.
# Exits non-zero on any failure.
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

# Every fuzz target (a crate of its own, fuzz/) runs briefly from its seeds, so that a parser
# of untrusted bytes that panics, overflows or hangs on what the fuzzer finds in that time
# fails CI. SLUICE_FUZZ_SECONDS sets the time per target (0 only checks they compile).
FUZZ_SECS="${SLUICE_FUZZ_SECONDS:-15}"
if [[ "$FUZZ_SECS" == 0 ]]; then
    step "fuzz targets compile (cargo check in fuzz/)"
    (cd fuzz && cargo check --bins --examples)
else
    step "fuzz targets compile, then each runs ${FUZZ_SECS} s (scripts/fuzz.sh)"
    (cd fuzz && cargo check --examples)
    scripts/fuzz.sh "$FUZZ_SECS"
fi

step "all tests passed in $((SECONDS - start)) s"
