#!/usr/bin/env bash
# sluice-convert beside `ffmpeg -c copy` on the same large files, in the same run:
# FLV -> TS, FLV -> MP4 (moov first), TS -> FLV, MP4 -> FLV. Wall time, MB/s of input, CPU
# time (user + sys) and peak RSS for each, RUNS times each alternating the two tools, the
# fastest run kept; once writing files beside the inputs, once writing to /dev/null;
# then sluice-convert's peak RSS on the 10 s fixture beside the large file (memory must not
# grow with the file).
#
#   bench/convert.sh                       # builds release; input made by make-fixtures --long
#   SECONDS_LONG=400 RUNS=3 SKIP_BUILD=1 bench/convert.sh
#   DATA=/big/disk bench/convert.sh        # where the inputs and outputs go
#
# Inputs: DATA/long.flv (scripts/make-fixtures.sh --long, 4 Mbit/s; 400 s is about 200 MB),
# and long.ts / long.mp4 remuxed from it by ffmpeg. Outputs are deleted after each run; the
# inputs are read once before timing so both tools start from the page cache.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SECONDS_LONG=${SECONDS_LONG:-400}
RUNS=${RUNS:-3}
DATA=${DATA:-$ROOT/target/bench-data}
CONVERT=$ROOT/target/release/sluice-convert
mkdir -p "$DATA"

if [ "${SKIP_BUILD:-0}" != 1 ]; then
    (cd "$ROOT" && cargo build --release -p sluice-converters)
fi
"$ROOT/scripts/make-fixtures.sh" --long "$DATA/long.flv" "$SECONDS_LONG" >&2
[ -s "$DATA/long.ts" ] && [ "$DATA/long.ts" -nt "$DATA/long.flv" ] ||
    ffmpeg -v error -nostdin -y -i "$DATA/long.flv" -c copy "$DATA/long.ts"
[ -s "$DATA/long.mp4" ] && [ "$DATA/long.mp4" -nt "$DATA/long.flv" ] ||
    ffmpeg -v error -nostdin -y -i "$DATA/long.flv" -c copy -movflags +faststart "$DATA/long.mp4"
for f in long.flv long.ts long.mp4; do cat "$DATA/$f" > /dev/null; done

OUT=$(mktemp -d "$DATA/out.XXXXXX")
trap 'rm -rf "$OUT"' EXIT

# run CMD...: prints "wall_s cpu_s peak_rss_kib" of CMD: wall to the ms (Python's clock),
# CPU (user + sys, to 10 ms) and peak RSS from GNU time (a small C parent, so the RSS is the
# command's own and not a forked interpreter's).
run() {
    python3 -c '
import subprocess, sys, tempfile, time
with tempfile.NamedTemporaryFile("r") as f:
    t = time.perf_counter()
    r = subprocess.run(["/usr/bin/time", "-o", f.name, "-f", "%U %S %M"] + sys.argv[1:],
                       stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t
    if r.returncode != 0:
        sys.exit("bench/convert: %s failed" % sys.argv[1])
    u, s, m = f.read().split()[-3:]
print("%.3f %.2f %s" % (wall, float(u) + float(s), m))
' "$@"
}

# measure TOOL IN OUT: prints "wall_s cpu_s peak_rss_kib"; OUT /dev/null writes no file.
measure() {
    local tool=$1 in=$2 out=$3 to=${3##*.} t
    if [ "$out" = /dev/null ]; then to=$4; else rm -f "$out"; fi
    if [ "$tool" = sluice ]; then
        if [ "$out" = /dev/null ]; then
            t=$(run sh -c "exec '$CONVERT' -q '$in' - --to $to > /dev/null")
        else
            t=$(run "$CONVERT" -q "$in" "$out")
        fi
    else
        local fmt=$to extra=()
        [ "$to" = ts ] && fmt=mpegts
        [ "$to" = mp4 ] && extra=(-movflags +faststart)
        t=$(run ffmpeg -v error -nostdin -y -i "$in" -c copy "${extra[@]}" -f "$fmt" "$out")
    fi
    if [ "$out" != /dev/null ]; then
        [ -s "$out" ] || { echo "bench/convert: $tool wrote nothing for $in -> $out" >&2; exit 1; }
        rm -f "$out"
    fi
    echo "$t"
}

# table DEST PAIRS...: DEST is a folder, or /dev/null; the fastest of RUNS runs (the tools
# alternating) per conversion.
table() {
    local dest=$1; shift
    echo "| conversion | input MB | sluice-convert s | MB/s | CPU s | peak RSS MiB | ffmpeg -c copy s | MB/s | CPU s | peak RSS MiB | wall ratio | CPU ratio |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
    for pair in "$@"; do
        local from=${pair%%:*} to=${pair##*:} in out mb
        in=$DATA/long.$from
        out=$dest/out.$to
        [ "$dest" = /dev/null ] && out=/dev/null
        mb=$(awk -v b="$(stat -c %s "$in")" 'BEGIN {printf "%.1f", b / 1e6}')
        local bw=999 bc=999 rs=0 fw=999 fc=999 rf=0 w c m
        for _ in $(seq "$RUNS"); do
            read -r w c m <<<"$(measure sluice "$in" "$out" "$to")"
            if awk -v a="$w" -v b="$bw" 'BEGIN {exit !(a < b)}'; then bw=$w; bc=$c; fi
            [ "$m" -gt "$rs" ] && rs=$m
            read -r w c m <<<"$(measure ffmpeg "$in" "$out" "$to")"
            if awk -v a="$w" -v b="$fw" 'BEGIN {exit !(a < b)}'; then fw=$w; fc=$c; fi
            [ "$m" -gt "$rf" ] && rf=$m
        done
        awk -v c="$from -> $to" -v mb="$mb" -v s="$bw" -v sc="$bc" -v rs="$rs" \
            -v f="$fw" -v fc="$fc" -v rf="$rf" 'BEGIN {
            printf "| %s | %s | %.3f | %.0f | %.3f | %.1f | %.3f | %.0f | %.3f | %.1f | %.1fx | %.1fx |\n",
                c, mb, s, mb / s, sc, rs / 1024, f, mb / f, fc, rf / 1024, f / s, fc / sc }'
    done
}

echo "Files on $(df -T "$DATA" | awk 'NR == 2 {print $2}') ($DATA):"
echo
table "$OUT" flv:ts flv:mp4 ts:flv mp4:flv
echo
echo "Output to /dev/null (the conversion without the kernel's write of the output):"
echo
table /dev/null flv:ts ts:flv mp4:flv

echo
echo "Peak RSS of sluice-convert by input size (the same conversions):"
echo
echo "| conversion | 10 s file (MiB) | ${SECONDS_LONG} s file (MiB) |"
echo "|---|---|---|"
SMALL=$(mktemp -d "$DATA/small.XXXXXX")
trap 'rm -rf "$OUT" "$SMALL"' EXIT
ffmpeg -v error -nostdin -y -i "$DATA/long.flv" -t 10 -c copy "$SMALL/short.flv"
ffmpeg -v error -nostdin -y -i "$DATA/long.ts" -t 10 -c copy "$SMALL/short.ts"
ffmpeg -v error -nostdin -y -i "$DATA/long.mp4" -t 10 -c copy -movflags +faststart "$SMALL/short.mp4"
for pair in flv:ts flv:mp4 ts:flv mp4:flv; do
    from=${pair%%:*} to=${pair##*:}
    read -r _ _ small <<<"$(measure sluice "$SMALL/short.$from" "$OUT/out.$to")"
    read -r _ _ big <<<"$(measure sluice "$DATA/long.$from" "$OUT/out.$to")"
    awk -v c="$from -> $to" -v a="$small" -v b="$big" 'BEGIN {printf "| %s | %.1f | %.1f |\n", c, a / 1024, b / 1024}'
done
