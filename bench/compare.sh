#!/usr/bin/env bash
# Sluice beside nginx-rtmp on this machine: the same load against each, one table.
#
#   bench/compare.sh                          # rtmp, hls and publishers, full size (~8 min)
#   bench/compare.sh rtmp                     # 1000 RTMP players of one 1 Mb/s stream, 60 s
#   bench/compare.sh hls                      # 1000 HLS players of one 1 Mb/s stream
#   bench/compare.sh publishers               # 100 publishers at 1 Mb/s each, HLS on, no players
#   PLAYERS=50 SECONDS=10 SKIP_BUILD=1 bench/compare.sh rtmp       # quick run
#
# Knobs (environment):
#   PLAYERS=1000       RTMP players (rtmp)            HLS_PLAYERS=$PLAYERS  HLS players (hls)
#   PUBLISHERS=100     publishers (publishers)        SECONDS=60 (or DURATION) play time after the ramp
#   RAMP_MS=5          ms between two players' starts WARMUP_MS=3000 (8000 for hls: nginx-rtmp
#                      needs a few fragments before its playlist exists)
#   SERVERS="nginx sluice"   NGINX_WORKERS=1   SAMPLE_S=1 (/proc period)   SETTLE_S=3   END_MARGIN_S=2
#   OUT=/tmp/sluice-compare.DATE (run folder, kept)   KEEP=1 (also keep fixture, HLS, sockets)
#   SKIP_BUILD=1   SKIP_INSTALL=1   LEGACY=1 (old rtmp-play client)   SLUICE=… BENCH=… (binaries)
#
# Installs Debian's nginx and libnginx-mod-rtmp where missing, builds Sluice and its load
# client, makes a ~1 Mb/s FLV fixture with ffmpeg, then for each scenario and each server:
# starts the server on loopback (free ports, temp config), runs `sluice-bench load` against
# it, samples every process of the server from /proc (bench/compare/measure.py), stops it.
# Every process it starts is stopped by pid on exit, even on failure.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
HERE=$ROOT/bench/compare
MEASURE=$HERE/measure.py

# SECONDS is bash's own clock: read the caller's value from the environment, not the shell.
DURATION=${DURATION:-$(printenv SECONDS || echo 60)}
PLAYERS=${PLAYERS:-1000}
HLS_PLAYERS=${HLS_PLAYERS:-$PLAYERS}
PUBLISHERS=${PUBLISHERS:-100}
SERVERS=${SERVERS:-nginx sluice}
NGINX_WORKERS=${NGINX_WORKERS:-1}
SAMPLE_S=${SAMPLE_S:-1}
SETTLE_S=${SETTLE_S:-3}
END_MARGIN_S=${END_MARGIN_S:-2}
KEEP=${KEEP:-0}
BIN=$ROOT/target/release
SLUICE=${SLUICE:-$BIN/sluice}
BENCH=${BENCH:-$BIN/sluice-bench}
SCENARIOS=("$@")
[ ${#SCENARIOS[@]} -eq 0 ] && SCENARIOS=(rtmp hls publishers)
for s in "${SCENARIOS[@]}"; do
    case $s in
        rtmp|hls|publishers) ;;
        -h|--help) awk 'NR > 1 && !/^#/ {exit} NR > 1' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown scenario '$s' (rtmp, hls, publishers)" >&2; exit 2 ;;
    esac
done

log() { echo "[compare $(date +%T)] $*" >&2; }

# ------------------------------------------------------------------ install and build
if [ "${SKIP_INSTALL:-0}" != 1 ]; then
    missing=()
    for p in nginx libnginx-mod-rtmp ffmpeg python3; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing ${missing[*]}"
        # Keep the package's own nginx service from starting (port 80, not ours to stop).
        POLICY_ADDED=0
        if [ ! -e /usr/sbin/policy-rc.d ]; then
            printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
            chmod +x /usr/sbin/policy-rc.d
            POLICY_ADDED=1
        fi
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq "${missing[@]}" > /dev/null
        [ "$POLICY_ADDED" = 1 ] && rm -f /usr/sbin/policy-rc.d
    fi
fi
NGINX_MOD=/usr/lib/nginx/modules/ngx_rtmp_module.so
if [[ " $SERVERS " == *" nginx "* ]] && { ! command -v nginx > /dev/null || [ ! -e "$NGINX_MOD" ]; }; then
    echo "nginx or $NGINX_MOD missing (apt-get install nginx libnginx-mod-rtmp)" >&2
    exit 1
fi
if [ "${SKIP_BUILD:-0}" != 1 ]; then
    (cd "$ROOT" && cargo build --release -p sluice -p sluice-bench)
fi

# ------------------------------------------------------------------ run folder, cleanup
OUT=${OUT:-/tmp/sluice-compare.$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
TMP=$OUT/tmp
mkdir -p "$TMP"
HLS_ROOT=''

# Everything started, by pid. Sluice's controller stops its own group; nginx is a daemon
# whose master and workers are collected from its pid file.
SLUICE_PID='' NGINX_PREFIX='' NGINX_PIDS='' CLIENT_PID='' SAMPLER_PID=''
EXTRA_PIDS=()

stop_pid() { # PID [SECONDS]: TERM, wait, KILL
    local p=$1 n=$(( ${2:-5} * 10 ))
    [ -n "$p" ] || return 0
    kill -TERM "$p" 2> /dev/null || return 0
    for _ in $(seq "$n"); do kill -0 "$p" 2> /dev/null || return 0; sleep 0.1; done
    kill -KILL "$p" 2> /dev/null || true
}

nginx_pids() { # master from the pid file, then its children
    local m
    m=$(cat "$NGINX_PREFIX/nginx.pid" 2> /dev/null) || return 0
    [ -n "$m" ] && kill -0 "$m" 2> /dev/null || return 0
    echo "$m"
    ps -e -o pid=,ppid= | awk -v m="$m" '$2 == m {print $1}'
}

stop_nginx() {
    [ -n "$NGINX_PREFIX" ] || return 0
    local pids m
    pids="$NGINX_PIDS $(nginx_pids)"
    m=$(cat "$NGINX_PREFIX/nginx.pid" 2> /dev/null || true)
    if [ -n "$m" ] && kill -0 "$m" 2> /dev/null; then
        kill -QUIT "$m" 2> /dev/null || true
        for _ in $(seq 50); do kill -0 "$m" 2> /dev/null || break; sleep 0.1; done
    fi
    # Leftovers (a worker still draining RTMP sessions after a graceful quit), by pid.
    for p in $pids; do
        if kill -0 "$p" 2> /dev/null && grep -q nginx "/proc/$p/comm" 2> /dev/null; then
            kill -KILL "$p" 2> /dev/null || true
        fi
    done
    NGINX_PREFIX='' NGINX_PIDS=''
}

stop_sluice() {
    [ -n "$SLUICE_PID" ] || return 0
    # The controller stops its whole process group on SIGTERM.
    stop_pid "$SLUICE_PID" 5
    for p in $(ps -e -o pid=,pgid= | awk -v g="$SLUICE_PID" '$2 == g {print $1}'); do
        kill -KILL "$p" 2> /dev/null || true
    done
    SLUICE_PID=
}

stop_client() {
    local p
    [ -n "$SAMPLER_PID" ] && stop_pid "$SAMPLER_PID" 2
    [ -n "$CLIENT_PID" ] && stop_pid "$CLIENT_PID" 3
    for p in "${EXTRA_PIDS[@]}"; do stop_pid "$p" 2; done
    SAMPLER_PID='' CLIENT_PID=''
    EXTRA_PIDS=()
}

cleanup() {
    set +e
    stop_client
    stop_nginx
    stop_sluice
    wait 2> /dev/null
    # Safety net: anything still running with this run's folder in its command line.
    local p left=""
    # shellcheck disable=SC2013  # pids are words
    for p in $(grep -lsF "$OUT/" /proc/[0-9]*/cmdline | cut -d/ -f3); do
        [ "$p" = $$ ] || [ "$p" = "$BASHPID" ] && continue
        kill -0 "$p" 2> /dev/null || continue   # (the grep itself, gone)
        left="$left $p"
        kill -KILL "$p" 2> /dev/null
    done
    [ -n "$left" ] && log "killed leftovers:$left"
    if [ "$KEEP" != 1 ]; then rm -rf "$TMP" "$HLS_ROOT"; else log "kept $TMP $HLS_ROOT"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
HLS_ROOT=$(mktemp -d /tmp/sluice-compare-hls.XXXXXX)   # nginx-rtmp's fragments
chmod 755 "$HLS_ROOT"

# Open files: as high as the hard limit allows, for the client and the servers.
ulimit -n "$(ulimit -Hn)" 2> /dev/null || true
NOFILE=$(ulimit -n)

# Run copies, so that a cargo build elsewhere cannot swap a binary in the middle of a run
# (the controller re-executes its own binary for every listener and buffer).
BINCOPY=$TMP/bin
mkdir -p "$BINCOPY"
cp "$SLUICE" "$BINCOPY/sluice"
cp "$BENCH" "$BINCOPY/sluice-bench"
SLUICE=$BINCOPY/sluice
BENCH=$BINCOPY/sluice-bench

LEGACY=${LEGACY:-}
if [ -z "$LEGACY" ]; then
    if "$BENCH" load --help > /dev/null 2>&1; then LEGACY=0; else LEGACY=1; fi
fi
[ "$LEGACY" = 1 ] && log "sluice-bench has no 'load' yet: RTMP players with 'rtmp-play', publishers with 'publish --loop', no HLS players"


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

# ------------------------------------------------------------------ fixture
# ~1 Mb/s: 640x360 25 fps x264 (900k, capped at 1000k), AAC 96k, 20 s, GOP 2 s (as viewers.sh).
FIX=$TMP/fixture.flv
log "making the fixture"
ffmpeg -hide_banner -loglevel error -nostdin -y \
    -f lavfi -i "testsrc2=size=640x360:rate=25,noise=alls=12:allf=t" \
    -f lavfi -i "sine=frequency=440:sample_rate=48000" -t 20 \
    -c:v libx264 -preset veryfast -pix_fmt yuv420p -b:v 900k -maxrate 1000k -bufsize 1000k \
    -g 50 -keyint_min 50 -sc_threshold 0 -threads 1 \
    -c:a aac -b:a 96k -ac 2 "$FIX"
FIX_KBPS=$(ffprobe -v error -show_entries format=bit_rate -of csv=p=0 "$FIX" | awk '{printf "%.0f", $1/1000}')

# ------------------------------------------------------------------ servers
start_nginx() { # SCENARIO: sets NGINX_PREFIX RTMP_PORT HTTP_PORT RTMP_T HLS_T
    local sc=$1 hls=off
    NGINX_PREFIX=$TMP/nginx-$sc
    local hlsdir=$HLS_ROOT/$sc
    mkdir -p "$NGINX_PREFIX/logs" "$hlsdir"
    # The workers run as nobody: they must reach and write the HLS folder (so it lives in a
    # 0755 folder of its own under /tmp, not under a run folder that may be private).
    chown nobody:nogroup "$hlsdir"
    [ "$sc" != rtmp ] && hls=on   # HLS only where the scenario uses it: it costs CPU and disk
    RTMP_PORT=$(free_port); HTTP_PORT=$(free_port)
    while [ "$HTTP_PORT" = "$RTMP_PORT" ]; do HTTP_PORT=$(free_port); done
    local conns=$(( NOFILE > 1024 ? NOFILE - 512 : NOFILE ))
    sed -e "s|@PREFIX@|$NGINX_PREFIX|g" -e "s|@HLSDIR@|$hlsdir|g" \
        -e "s|@RTMP_PORT@|$RTMP_PORT|g" -e "s|@HTTP_PORT@|$HTTP_PORT|g" \
        -e "s|@WORKERS@|$NGINX_WORKERS|g" -e "s|@NOFILE@|$NOFILE|g" -e "s|@CONNS@|$conns|g" \
        -e "s|@HLS@|$hls|g" -e "s|@MODULE@|$NGINX_MOD|g" \
        "$HERE/nginx.conf.in" > "$NGINX_PREFIX/nginx.conf"
    nginx -p "$NGINX_PREFIX" -c "$NGINX_PREFIX/nginx.conf" -e "$NGINX_PREFIX/logs/error.log"
    wait_port "$RTMP_PORT" || { echo "nginx did not listen on $RTMP_PORT" >&2; cat "$NGINX_PREFIX/logs/error.log" >&2; return 1; }
    wait_port "$HTTP_PORT" || return 1
    NGINX_PIDS=$(nginx_pids | tr '\n' ' ')
    RTMP_T="rtmp://127.0.0.1:$RTMP_PORT/live/test{i}"
    HLS_T="http://127.0.0.1:$HTTP_PORT/hls/test{i}.m3u8"
    SAMPLE_ARGS=(--nginx-pidfile "$NGINX_PREFIX/nginx.pid")
    SERVER_LABEL="nginx-rtmp $(nginx -v 2>&1 | sed 's|.*nginx/||') ($NGINX_WORKERS worker$([ "$NGINX_WORKERS" = 1 ] || echo s))"
}

start_sluice() { # SCENARIO
    local sc=$1 dir=$TMP/sluice-$1 api
    mkdir -p "$dir"
    api=$(free_port); RTMP_PORT=$(free_port); HTTP_PORT=$(free_port)
    while [ "$RTMP_PORT" = "$api" ]; do RTMP_PORT=$(free_port); done
    while [ "$HTTP_PORT" = "$api" ] || [ "$HTTP_PORT" = "$RTMP_PORT" ]; do HTTP_PORT=$(free_port); done
    cat > "$dir/sluice.json" <<EOF
{"config": {"controller": {"interface": "127.0.0.1", "port": $api},
            "protocols": [{"connector": "RTMP", "port": $RTMP_PORT, "interface": "127.0.0.1"},
                          {"connector": "HTTP", "port": $HTTP_PORT, "interface": "127.0.0.1"}]},
 "streams": {"live": {"name": "live", "source": "push://"}}}
EOF
    "$SLUICE" -c "$dir/sluice.json" --rundir "$dir/run" > "$OUT/$TAG.server.log" 2>&1 &
    SLUICE_PID=$!
    wait_port "$RTMP_PORT" || { echo "sluice did not listen on $RTMP_PORT" >&2; tail "$OUT/$TAG.server.log" >&2; return 1; }
    wait_port "$HTTP_PORT" || return 1
    RTMP_T="rtmp://127.0.0.1:$RTMP_PORT/live/live+{i}"
    HLS_T="http://127.0.0.1:$HTTP_PORT/hls/live+{i}/index.m3u8"
    SAMPLE_ARGS=(--pgid "$SLUICE_PID")
    SERVER_LABEL="sluice $(cd "$ROOT" && git describe --always --dirty 2> /dev/null || echo '?')"
}

# ------------------------------------------------------------------ one run
ORDER=0
run_one() { # SCENARIO SERVER
    local sc=$1 srv=$2 units ramp warmup t_client t_exit rc=0 mem_at note=""
    TAG=$sc-$srv
    ORDER=$(( ORDER + 1 ))
    case $sc in
        rtmp) units=$PLAYERS ;;
        hls) units=$HLS_PLAYERS ;;
        publishers) units=$PUBLISHERS ;;
    esac
    ramp=${RAMP_MS:-5}   # between two players; the ramp lasts ramp x players
    local ramp_total=$(( ramp * units ))
    [ "$sc" = publishers ] && ramp_total=0
    warmup=${WARMUP_MS:-$([ "$sc" = hls ] && echo 8000 || echo 3000)}
    log "$TAG: $units, ${DURATION}s, ramp ${ramp}ms, warmup ${warmup}ms"
    "start_$srv" "$sc"
    log "$TAG: $SERVER_LABEL on rtmp $RTMP_PORT, http $HTTP_PORT"

    local json=$OUT/$TAG.load.json
    if [ "$LEGACY" = 0 ]; then
        local args=(load --publish-url "$RTMP_T" --file "$FIX" --seconds "$DURATION"
                    --ramp-ms "$ramp" --warmup-ms "$warmup" --json "$json")
        case $sc in
            rtmp) args+=(--publishers 1 --play-url "$RTMP_T" --players "$units") ;;
            hls) args+=(--publishers 1 --hls-url "$HLS_T" --hls-players "$units") ;;
            publishers) args+=(--publishers "$units") ;;
        esac
        echo "$BENCH ${args[*]}" > "$OUT/$TAG.cmd"
        t_client=$(date +%s.%N)
        "$BENCH" "${args[@]}" > "$OUT/$TAG.client.log" 2>&1 &
        CLIENT_PID=$!
    else
        # Old client: publishers are separate processes, started first; the window is
        # measured from the players' start.
        local n=1 i url
        [ "$sc" = publishers ] && n=$units
        for (( i = 0; i < n; i++ )); do
            url=${RTMP_T//\{i\}/$i}
            "$BENCH" publish --url "$url" --file "$FIX" --loop >> "$OUT/$TAG.publish.log" 2>&1 &
            EXTRA_PIDS+=($!)
        done
        sleep $(( warmup / 1000 ))
        warmup=0
        t_client=$(date +%s.%N)
        if [ "$sc" = rtmp ]; then
            echo "$BENCH rtmp-play --url ${RTMP_T//\{i\}/0} --viewers $units --seconds $DURATION --stagger-ms $ramp" > "$OUT/$TAG.cmd"
            "$BENCH" rtmp-play --url "${RTMP_T//\{i\}/0}" --viewers "$units" --seconds "$DURATION" \
                --stagger-ms "$ramp" > "$OUT/$TAG.client.log" 2>&1 &
        else
            note="legacy client: no HLS players; publishers only"
            sleep "$DURATION" &
        fi
        CLIENT_PID=$!
    fi
    local ports=(--port "$RTMP_PORT" --port "$HTTP_PORT")
    python3 "$MEASURE" sample --out "$OUT/$TAG.samples.jsonl" --interval "$SAMPLE_S" \
        --client "$CLIENT_PID" "${SAMPLE_ARGS[@]}" "${ports[@]}" &
    SAMPLER_PID=$!

    # Memory once, mid-window (every player connected, none gone yet).
    local open_s
    # Players start after the warmup, one every $ramp ms, then all play DURATION s.
    open_s=$(awk -v r="$ramp_total" -v w="$warmup" -v s="$SETTLE_S" 'BEGIN {printf "%.2f", (r + w) / 1000 + s}')
    mem_at=$(awk -v o="$open_s" -v d="$DURATION" -v s="$SETTLE_S" -v m="$END_MARGIN_S" \
        'BEGIN {x = (d - s - m) / 2; if (x < 1) x = 1; printf "%.2f", o + x}')
    local t_mem
    t_mem=$(awk -v a="$t_client" -v b="$mem_at" 'BEGIN {printf "%.3f", a + b}')
    while kill -0 "$CLIENT_PID" 2> /dev/null && \
          awk -v t="$t_mem" -v n="$(date +%s.%N)" 'BEGIN {exit !(n < t)}'; do
        sleep 0.2
    done
    if kill -0 "$CLIENT_PID" 2> /dev/null; then
        python3 "$MEASURE" mem "${SAMPLE_ARGS[@]}" "${ports[@]}" > "$OUT/$TAG.mem.json"
    else
        note="${note:+$note; }client ended before mid-window: no memory sample"
    fi

    wait "$CLIENT_PID" || rc=$?
    t_exit=$(date +%s.%N)
    CLIENT_PID=
    wait "$SAMPLER_PID" 2> /dev/null || true
    SAMPLER_PID=
    stop_client
    if [ "$LEGACY" = 1 ] && [ "$sc" = rtmp ]; then
        python3 "$MEASURE" legacy-json "$OUT/$TAG.client.log" > "$json"
    fi
    [ -s "$json" ] || note="${note:+$note; }no client JSON (see $TAG.client.log)"
    [ "$srv" = nginx ] && cp "$NGINX_PREFIX/logs/error.log" "$OUT/$TAG.server.log" 2> /dev/null
    "stop_$srv"
    log "$TAG: client exit $rc"

    python3 - "$OUT/$TAG.meta.json" <<EOF
import json, sys
json.dump({"tag": "$TAG", "scenario": "$sc", "server": "$srv", "server_label": "$SERVER_LABEL",
           "order": $ORDER, "units": $units, "seconds": $DURATION, "ramp_ms": $ramp,
           "warmup_ms": $warmup, "t_client": $t_client, "t_exit": $t_exit,
           "open_s": $open_s, "end_margin_s": $END_MARGIN_S, "client_exit": $rc,
           "legacy": $LEGACY, "note": """$note"""}, open(sys.argv[1], "w"))
EOF
}

for sc in "${SCENARIOS[@]}"; do
    for srv in $SERVERS; do
        run_one "$sc" "$srv"
    done
done

# ------------------------------------------------------------------ report
{
    echo "## Sluice beside nginx-rtmp"
    echo
    echo "- machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(uname -r); open files $NOFILE"
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'), sluice git $(cd "$ROOT" && git describe --always --dirty 2> /dev/null || echo '?'); $(nginx -v 2>&1 || echo 'no nginx'), libnginx-mod-rtmp $(dpkg-query -W -f='${Version}' libnginx-mod-rtmp 2> /dev/null || echo '?')"
    echo "- fixture: 640x360 25 fps H.264 + AAC 96k, ${FIX_KBPS} kb/s, looped; client: $([ "$LEGACY" = 1 ] && echo 'legacy rtmp-play' || echo 'sluice-bench load'), --seconds $DURATION"
    echo "- nginx-rtmp ran with worker_processes $NGINX_WORKERS (a stream's players must share the publisher's worker); HLS on only in the hls and publishers runs. Sluice makes HLS on request only."
    echo "- nginx-rtmp has no GOP cache: a new player's first frame is the next keyframe (GOP 2 s here); with HLS on it also runs a cache manager process (fragment cleanup), counted with the server. Sluice starts players at the last keyframe."
    echo "- CPU: run time from schedstat (every thread) of every server process (nginx: master + workers; Sluice: the controller's process group, connection processes included) over the steady window, from /proc every ${SAMPLE_S}s; s per viewer-minute = CPU s / viewers / window minutes. Memory: RSS and PSS (smaps_rollup) summed over those processes once mid-window; per viewer = total / viewers."
    echo
    python3 "$MEASURE" table "$OUT"
    echo
    echo "Raw: $OUT (*.load.json from the client, *.samples.jsonl, *.mem.json, *.meta.json, logs)"
} | tee "$OUT/table.md"
