#!/usr/bin/env bash
# Hostile clients against a real Sluice while honest viewers watch: one table row per attack.
#
#   bench/attack.sh                        # every attack, 60 s each (~13 min)
#   bench/attack.sh --seconds 15           # quick run
#   bench/attack.sh --seconds 15 --attacks slowloris,garbage
#   bench/attack.sh --json report.json     # also the JSON report
#   bench/attack.sh -- --slowloris 500     # anything after -- goes to `sluice-bench attack`
#
# Knobs (environment):
#   SLUICE=… BENCH=…   binaries (default target/release/{sluice,sluice-bench}; built unless
#                      SKIP_BUILD=1)
#   FIXTURE=…          FLV the publisher loops (default target/fixtures/nobframes.flv, ~1 Mb/s,
#                      made by scripts/make-fixtures.sh when missing)
#   LIMITS='{…}'       the server's `config.limits` object (default: none, the server's own
#                      defaults); PROTO_LIMITS='"max_per_address": 50' is added to every
#                      protocol entry
#   OUT=…              run folder (default /tmp/sluice-attack.DATE, kept: logs, config, JSON)
#
# Starts Sluice (HTTP, RTMP, RTSP and DTSC listeners on free loopback ports, one push stream
# `live`), publishes the fixture to it with ffmpeg (`-re -stream_loop -1`), then runs
# `sluice-bench attack`: 50 RTMP and 50 HLS players watch from 127.0.0.1 while each attack
# comes from 127.0.0.2-254. Every process it starts is stopped by pid on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SECS=60
JSON=''
ATTACKS=''
EXTRA=()
while [ $# -gt 0 ]; do
    case $1 in
        --seconds) SECS=$2; shift 2 ;;
        --json) JSON=$2; shift 2 ;;
        --attacks) ATTACKS=$2; shift 2 ;;
        --) shift; EXTRA=("$@"); break ;;
        -h|--help) awk 'NR > 1 && !/^#/ {exit} NR > 1' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done

BIN=$ROOT/target/release
SLUICE=${SLUICE:-$BIN/sluice}
BENCH=${BENCH:-$BIN/sluice-bench}
FIXTURE=${FIXTURE:-$ROOT/target/fixtures/nobframes.flv}
LIMITS=${LIMITS:-}
PROTO_LIMITS=${PROTO_LIMITS:-}

log() { echo "[attack $(date +%T)] $*" >&2; }

command -v ffmpeg > /dev/null || { echo "ffmpeg not found (scripts/install-test-deps.sh)" >&2; exit 1; }
if [ "${SKIP_BUILD:-0}" != 1 ]; then
    (cd "$ROOT" && cargo build --release -p sluice -p sluice-bench)
fi
if [ ! -s "$FIXTURE" ]; then
    log "making the fixtures"
    "$ROOT/scripts/make-fixtures.sh" "$(dirname "$FIXTURE")" > /dev/null
fi

OUT=${OUT:-/tmp/sluice-attack.$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

SLUICE_PID='' FFMPEG_PID='' BENCH_PID=''
stop_pid() { # PID [SECONDS]: TERM, wait, KILL
    local p=$1 n=$(( ${2:-5} * 10 ))
    [ -n "$p" ] || return 0
    kill -TERM "$p" 2> /dev/null || return 0
    for _ in $(seq "$n"); do kill -0 "$p" 2> /dev/null || return 0; sleep 0.1; done
    kill -KILL "$p" 2> /dev/null || true
}
cleanup() {
    set +e
    stop_pid "$BENCH_PID" 3
    stop_pid "$FFMPEG_PID" 3
    if [ -n "$SLUICE_PID" ]; then
        # The controller stops its process group on SIGTERM; leftovers of the group, by pid.
        stop_pid "$SLUICE_PID" 10
        for p in $(ps -e -o pid=,pgid= | awk -v g="$SLUICE_PID" '$2 == g {print $1}'); do
            kill -KILL "$p" 2> /dev/null
        done
    fi
    wait 2> /dev/null
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Open files: as many as the hard limit allows, for the server and the bench.
ulimit -n "$(ulimit -Hn)" 2> /dev/null || true

# Run copies: a cargo build elsewhere cannot swap a binary mid-run (the controller
# re-executes its own binary for every listener and buffer).
mkdir -p "$OUT/bin"
cp "$SLUICE" "$OUT/bin/sluice"
cp "$BENCH" "$OUT/bin/sluice-bench"
SLUICE=$OUT/bin/sluice
BENCH=$OUT/bin/sluice-bench

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
wait_port() { # PORT: up to 10 s
    for _ in $(seq 100); do
        (exec 3<> "/dev/tcp/127.0.0.1/$1") 2> /dev/null && return 0
        sleep 0.1
    done
    return 1
}
declare -A PORT
used=' '
for k in api http rtmp rtsp dtsc; do
    p=$(free_port)
    while [[ "$used" == *" $p "* ]]; do p=$(free_port); done
    used="$used$p "
    PORT[$k]=$p
done

pl=''
[ -n "$PROTO_LIMITS" ] && pl=", $PROTO_LIMITS"
lim=''
[ -n "$LIMITS" ] && lim="\"limits\": $LIMITS,"
cat > "$OUT/sluice.json" <<EOF
{"config": {$lim
            "controller": {"interface": "127.0.0.1", "port": ${PORT[api]}},
            "protocols": [{"connector": "HTTP", "port": ${PORT[http]}, "interface": "127.0.0.1"$pl},
                          {"connector": "RTMP", "port": ${PORT[rtmp]}, "interface": "127.0.0.1"$pl},
                          {"connector": "RTSP", "port": ${PORT[rtsp]}, "interface": "127.0.0.1"$pl},
                          {"connector": "DTSC", "port": ${PORT[dtsc]}, "interface": "127.0.0.1"$pl}]},
 "streams": {"live": {"name": "live", "source": "push://"}}}
EOF

log "sluice on http ${PORT[http]}, rtmp ${PORT[rtmp]}, rtsp ${PORT[rtsp]}, dtsc ${PORT[dtsc]} (run folder $OUT)"
"$SLUICE" -c "$OUT/sluice.json" --rundir "$OUT/run" > "$OUT/server.log" 2>&1 &
SLUICE_PID=$!
for k in http rtmp rtsp dtsc; do
    wait_port "${PORT[$k]}" || { echo "sluice did not listen on ${PORT[$k]}" >&2; tail "$OUT/server.log" >&2; exit 1; }
done

# The limits in force, as the listeners state them:
# "listening on I:P (at most N connections, A per address, T in all; requests within R s;
#  viewers dropped after S s without progress)"
line=$(grep -m1 'RTMP.*listening on' "$OUT/server.log" || true)
TOTAL=$(sed -n 's/.* \([0-9]*\) in all.*/\1/p' <<< "$line")
PER_ADDR=$(sed -n 's/.* \([0-9]*\) per address.*/\1/p' <<< "$line")
REQ=$(sed -n 's/.*requests within \([0-9]*\) s.*/\1/p' <<< "$line")
STALL=$(sed -n 's/.*dropped after \([0-9]*\) s.*/\1/p' <<< "$line")
[ -n "$TOTAL" ] && [ -n "$REQ" ] && [ -n "$STALL" ] || { echo "cannot read the limits from: $line" >&2; exit 1; }
NOTE="$([ -n "$LIMITS$PROTO_LIMITS" ] && echo "config limits ${LIMITS:-{\}} ${PROTO_LIMITS}; " || echo "server defaults; ")$TOTAL connections in all, $PER_ADDR per address, request deadline $REQ s, stalled viewers dropped after $STALL s"
log "limits: $NOTE"

log "publishing $(basename "$FIXTURE") with ffmpeg"
ffmpeg -hide_banner -loglevel error -nostdin -re -stream_loop -1 -i "$FIXTURE" -c copy \
    -f flv "rtmp://127.0.0.1:${PORT[rtmp]}/live/live" > "$OUT/ffmpeg.log" 2>&1 &
FFMPEG_PID=$!
ok=0
for _ in $(seq 50); do
    if curl -sf -o /dev/null "http://127.0.0.1:${PORT[http]}/hls/live/index.m3u8"; then ok=1; break; fi
    sleep 0.2
done
[ $ok = 1 ] || { echo "the stream did not come up" >&2; tail "$OUT/server.log" "$OUT/ffmpeg.log" >&2; exit 1; }
sleep 4   # a few segments before the HLS players start

args=(attack --host 127.0.0.1 --http-port "${PORT[http]}" --rtmp-port "${PORT[rtmp]}"
      --rtsp-port "${PORT[rtsp]}" --dtsc-port "${PORT[dtsc]}" --stream live --pgid "$SLUICE_PID"
      --seconds "$SECS" --request-timeout "$REQ" --stall-timeout "$STALL"
      --max-connections "$TOTAL" --limits-note "$NOTE" --json "$OUT/attack.json")
[ -n "$ATTACKS" ] && args+=(--attacks "$ATTACKS")
args+=("${EXTRA[@]}")
{
    echo "## sluice-bench attack"
    echo
    echo "- machine: $(nproc) cores, $(free -g | awk '/^Mem:/ {print $2}') GiB ($(free -g | awk '/^Mem:/ {print "free -g: total " $2 ", used " $3 ", free " $4}')), kernel $(uname -r)"
    echo "- sluice $(cd "$ROOT" && git describe --always --dirty 2> /dev/null || echo '?'), $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "- stream: $(basename "$FIXTURE") ($(ffprobe -v error -show_entries format=bit_rate -of csv=p=0 "$FIXTURE" | awk '{printf "%.0f kb/s", $1/1000}')) looped by ffmpeg -re -stream_loop -1 -c copy"
    echo "- command: bench/attack.sh --seconds $SECS${ATTACKS:+ --attacks $ATTACKS}${LIMITS:+ (LIMITS=$LIMITS)}${PROTO_LIMITS:+ (PROTO_LIMITS=$PROTO_LIMITS)}"
} | tee "$OUT/table.md"
log "sluice-bench ${args[*]}"
rc=0
"$BENCH" "${args[@]}" > "$OUT/bench.out" 2> "$OUT/bench.err" &
BENCH_PID=$!
tail -f "$OUT/bench.err" --pid "$BENCH_PID" >&2 &
wait "$BENCH_PID" || rc=$?
BENCH_PID=''
tee -a "$OUT/table.md" < "$OUT/bench.out"
[ -n "$JSON" ] && cp "$OUT/attack.json" "$JSON"
kill -0 "$FFMPEG_PID" 2> /dev/null || log "warning: ffmpeg (the publisher) ended during the run: see $OUT/ffmpeg.log"
log "run folder: $OUT (table.md, attack.json, server.log)"
exit "$rc"
