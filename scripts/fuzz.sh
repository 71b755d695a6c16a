#!/usr/bin/env bash
# Runs every cargo-fuzz target of fuzz/ (dtsc's parsers of untrusted bytes) for SECONDS each.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]     default: 30 s, every target (cargo fuzz list)
#
# Installs cargo-fuzz when missing. Only a stable toolchain is needed: RUSTC_BOOTSTRAP=1 lets
# cargo-fuzz pass its -Z flags. AddressSanitizer is used when it builds here, else no
# sanitizer (safe Rust still panics on every out-of-bounds access and, with -a, overflow).
# Override with FUZZ_SANITIZER=address|none.
#
# Seeds are generated (fuzz/examples/make_seeds.rs, plus the head of fixtures/demo.flv when
# present) into fuzz/seeds/; libFuzzer's growing corpus stays in fuzz/corpus/<target>/ and
# crashes in fuzz/artifacts/<target>/ (all git-ignored). Per-target logs:
# fuzz/artifacts/logs/<target>.log. Exits non-zero when any target crashed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FUZZ="$ROOT/fuzz"
SECS="${1:-30}"
[[ $# -gt 0 ]] && shift
[[ "$SECS" =~ ^[0-9]+$ ]] || { echo "fuzz.sh: SECONDS must be a number, got '$SECS'" >&2; exit 2; }

export RUSTC_BOOTSTRAP=1
export PATH="$HOME/.cargo/bin:$PATH"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "=== installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

cd "$FUZZ"
if [[ $# -gt 0 ]]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi

echo "=== seeds into fuzz/seeds/"
rm -rf seeds
cargo run -q --example make_seeds -- seeds
if [[ -f "$ROOT/fixtures/demo.flv" ]]; then
    head -c 65536 "$ROOT/fixtures/demo.flv" > seeds/flv_tags/demo_head.flv
fi

SAN="${FUZZ_SANITIZER:-}"
if [[ -z "$SAN" ]]; then
    if cargo fuzz build -a -s address "${targets[0]}" >/dev/null 2>&1; then
        SAN=address
    else
        echo "=== AddressSanitizer does not build here; fuzzing without a sanitizer"
        SAN=none
    fi
fi
echo "=== building ${#targets[@]} targets (sanitizer: $SAN)"
cargo fuzz build -a -s "$SAN"

mkdir -p artifacts/logs
failed=()
summary=()
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "seeds/$t"
    log="artifacts/logs/$t.log"
    echo "=== $t for ${SECS}s"
    rc=0
    cargo fuzz run -a -s "$SAN" "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$SECS" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
        >"$log" 2>&1 || rc=$?
    runs=$(grep -oE 'Done [0-9]+ runs in [0-9]+' "$log" | tail -1 | sed -E 's/Done ([0-9]+) runs in ([0-9]+)/\1 runs in \2 s/' || true)
    eps=$(grep -oE 'average_exec_per_sec: +[0-9]+' "$log" | grep -oE '[0-9]+$' | tail -1 || true)
    cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+/[0-9]+[a-zA-Z]*' "$log" | tail -1 || true)
    if [[ $rc -ne 0 ]]; then
        failed+=("$t")
        summary+=("$t: CRASH (exit $rc) — see $log and fuzz/artifacts/$t/")
        grep -E "panicked at|ERROR: libFuzzer|SUMMARY|Test unit written" "$log" | head -5 || true
    else
        summary+=("$t: ok — ${runs:-? runs}, ${eps:-?} exec/s, ${cov}")
    fi
done

echo
echo "=== summary (${SECS}s per target, sanitizer $SAN)"
printf '  %s\n' "${summary[@]}"
if [[ ${#failed[@]} -gt 0 ]]; then
    echo "fuzz.sh: crashes in: ${failed[*]}" >&2
    exit 1
fi
