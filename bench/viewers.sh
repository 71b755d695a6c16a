#!/usr/bin/env bash
# 100 RTMP viewers of a ~1 Mb/s live stream: CPU and PSS per viewer process, first video byte.
#
#   bench/viewers.sh                      # builds release, 100 viewers, 30 s, 20 s CPU window
#   VIEWERS=50 SECONDS_PLAY=30 WINDOW=20 SKIP_BUILD=1 STAGGER_MS=0 bench/viewers.sh
#   SLUICE=/other/build/sluice SKIP_BUILD=1 bench/viewers.sh   # compare a server build
#
# Starts its own Sluice (temp config, free ports, temp rundir), publishes a looped ffmpeg
# fixture with `ffmpeg -re`, runs `sluice-bench rtmp-play`, samples every `RTMP play` child
# of the `sluice-RTMP` listener, prints markdown, and stops everything it started by pid.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
VIEWERS=${VIEWERS:-100}
SECONDS_PLAY=${SECONDS_PLAY:-30}
WINDOW=${WINDOW:-20}
STAGGER_MS=${STAGGER_MS:-0}
KEEP=${KEEP:-0}
BIN=$ROOT/target/release
SLUICE=${SLUICE:-$BIN/sluice}   # server binary under test (override to compare builds)
# Every viewer must still be playing when the CPU window closes and memory is read.
MIN_PLAY=$(( 5 + VIEWERS * STAGGER_MS / 1000 + WINDOW + 3 ))
[ "$SECONDS_PLAY" -lt "$MIN_PLAY" ] && SECONDS_PLAY=$MIN_PLAY

if [ "${SKIP_BUILD:-0}" != 1 ]; then
    (cd "$ROOT" && cargo build --release -p sluice -p sluice-bench)
fi

TMP=$(mktemp -d /tmp/sluice-viewers.XXXXXX)
SLUICE_PID= FFMPEG_PID= BENCH_PID=

cleanup() {
    set +e
    [ -n "$BENCH_PID" ] && kill "$BENCH_PID" 2>/dev/null
    [ -n "$FFMPEG_PID" ] && kill "$FFMPEG_PID" 2>/dev/null
    if [ -n "$SLUICE_PID" ]; then
        # The controller stops its whole process group on SIGTERM.
        kill -TERM "$SLUICE_PID" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$SLUICE_PID" 2>/dev/null || break; sleep 0.1; done
        # Leftovers of its group (pgid = controller pid), by pid.
        for p in $(ps -e -o pid=,pgid= | awk -v g="$SLUICE_PID" '$2 == g {print $1}'); do
            kill -KILL "$p" 2>/dev/null
        done
    fi
    wait 2>/dev/null
    if [ "$KEEP" = 1 ]; then echo "kept $TMP" >&2; else rm -rf "$TMP"; fi
}
trap cleanup EXIT INT TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
API_PORT=$(free_port)
RTMP_PORT=$(free_port)
while [ "$RTMP_PORT" = "$API_PORT" ]; do RTMP_PORT=$(free_port); done

# ~1 Mb/s fixture: 640x360 25 fps x264 (900k, capped at 1000k), AAC 96k, 20 s, GOP 2 s.
FIX=$TMP/fixture.flv
ffmpeg -hide_banner -loglevel error -y \
    -f lavfi -i "testsrc2=size=640x360:rate=25,noise=alls=12:allf=t" \
    -f lavfi -i "sine=frequency=440:sample_rate=48000" -t 20 \
    -c:v libx264 -preset veryfast -pix_fmt yuv420p -b:v 900k -maxrate 1000k -bufsize 1000k \
    -g 50 -keyint_min 50 -sc_threshold 0 -threads 1 \
    -c:a aac -b:a 96k -ac 2 "$FIX"
FIX_KBPS=$(ffprobe -v error -show_entries format=bit_rate -of csv=p=0 "$FIX" | awk '{printf "%.0f", $1/1000}')

cat > "$TMP/sluice.json" <<EOF
{"config": {"controller": {"interface": "127.0.0.1", "port": $API_PORT},
            "protocols": [{"connector": "RTMP", "port": $RTMP_PORT, "interface": "127.0.0.1"}]},
 "streams": {"live": {"name": "live", "source": "push://"}}}
EOF
"$SLUICE" -c "$TMP/sluice.json" --rundir "$TMP/run" > "$TMP/sluice.log" 2>&1 &
SLUICE_PID=$!
for _ in $(seq 100); do
    (exec 3<>/dev/tcp/127.0.0.1/"$RTMP_PORT") 2>/dev/null && break
    sleep 0.1
done

URL=rtmp://127.0.0.1:$RTMP_PORT/live/live
ffmpeg -hide_banner -loglevel error -nostdin -re -stream_loop -1 -i "$FIX" -c copy -f flv "$URL" \
    > "$TMP/ffmpeg.log" 2>&1 &
FFMPEG_PID=$!
sleep 4

"$BIN/sluice-bench" rtmp-play --url "$URL" --viewers "$VIEWERS" --seconds "$SECONDS_PLAY" \
    --stagger-ms "$STAGGER_MS" > "$TMP/bench.txt" 2>&1 &
BENCH_PID=$!
# Let every viewer connect and settle before the window opens.
sleep $(( 5 + VIEWERS * STAGGER_MS / 1000 ))

comm() { cat "/proc/$1/comm" 2>/dev/null; }
pids_named() { # NAME [PPID]: pids of Sluice's group with that comm
    ps -e -o pid=,ppid=,pgid=,comm= | awk -v g="$SLUICE_PID" -v pp="${2:-}" -v n="$1" '
        { c = ""; for (i = 4; i <= NF; i++) c = c (i > 4 ? " " : "") $i }
        $3 == g && c == n && (pp == "" || $2 == pp) {print $1}'
}
LISTENER=$(pids_named sluice-RTMP | head -1)
PLAYERS=$(pids_named "RTMP play" "$LISTENER")
BUFFERS=$(pids_named buffer)
PUBLISHERS=$(pids_named "RTMP publish")
ticks() { # CPU of every thread of the given pids, in clock ticks, from schedstat (exact ns;
          # utime+stime is sampled at the tick and misses short bursts of run time)
    local p
    for p in "$@"; do cat /proc/"$p"/task/*/schedstat 2>/dev/null; done |
        awk -v hz="$(getconf CLK_TCK)" '{ns += $1} END {printf "%d\n", ns * hz / 1e9}'
}
CLK=$(getconf CLK_TCK)
# shellcheck disable=SC2086
P0=$(ticks $PLAYERS); B0=$(ticks $BUFFERS); U0=$(ticks $PUBLISHERS); L0=$(ticks $LISTENER)
C0=$(ticks "$BENCH_PID"); F0=$(ticks "$FFMPEG_PID"); T0=$(date +%s.%N)
sleep "$WINDOW"
# shellcheck disable=SC2086
P1=$(ticks $PLAYERS); B1=$(ticks $BUFFERS); U1=$(ticks $PUBLISHERS); L1=$(ticks $LISTENER)
C1=$(ticks "$BENCH_PID"); F1=$(ticks "$FFMPEG_PID"); T1=$(date +%s.%N)

# Memory of every player, read once the window is over (still playing).
MEM=$TMP/mem.txt
: > "$MEM"
for p in $PLAYERS; do
    [ -r "/proc/$p/smaps_rollup" ] || continue
    awk -v p="$p" '/^Rss:/ {r=$2} /^Pss:/ {s=$2} /^Private_Dirty:/ {d=$2} /^Private_Clean:/ {c=$2}
        /^Shared_Clean:/ {sc=$2} /^Shared_Dirty:/ {sd=$2}
        END {print p, s, r, d, c, sc, sd}' "/proc/$p/smaps_rollup" >> "$MEM"
done
ONE=$(head -1 <<< "$PLAYERS")
LPSS=$(awk '/^Pss:/ {print $2}' "/proc/$LISTENER/smaps_rollup" 2>/dev/null || echo "?")
LRSS=$(awk '/^Rss:/ {print $2}' "/proc/$LISTENER/smaps_rollup" 2>/dev/null || echo "?")
# The listener's heap: what every forked viewer inherits copy-on-write.
LHEAP=$(awk '/ \[heap\]$/ {h = 1; r = $1; next} /^[0-9a-f]+-/ {h = 0}
    h && /^(Size|Rss|Private_Dirty):/ {printf "%s %s KiB, ", $1, $2} END {print r}' \
    "/proc/$LISTENER/smaps" 2>/dev/null || echo "?")
if [ -n "$ONE" ] && [ -r "/proc/$ONE/smaps" ]; then
    # Largest private mappings of one viewer (KiB): what its PSS is made of.
    awk '/^[0-9a-f]+-[0-9a-f]+ / {name = ($6 == "" ? "[anon]" : $6); range = $1}
         /^Private_Dirty:/ {pd[range] = $2; nm[range] = name}
         /^Private_Clean:/ {pc[range] = $2}
         /^Pss:/ {ps[range] = $2}
         END {for (r in pd) if (pd[r] + pc[r] > 0 || ps[r] >= 8) printf "%6d %6d %6d  %s %s\n", pd[r], pc[r], ps[r], nm[r], r}' \
        "/proc/$ONE/smaps" | sort -rn | head -12 > "$TMP/smaps-top.txt"
fi
wait "$BENCH_PID" || true
BENCH_PID=

N=$(wc -l < "$MEM")
EL=$(echo "$T1 - $T0" | bc -l)
echo "## sluice RTMP viewers benchmark"
echo
echo "- machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(uname -r)"
echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'), git $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')"
echo "- fixture: 640x360 25 fps H.264 + AAC 96k, ${FIX_KBPS} kb/s overall; viewers=$VIEWERS seconds=$SECONDS_PLAY stagger=${STAGGER_MS}ms window=${WINDOW}s (measured ${EL}s)"
echo
echo '### Client (sluice-bench rtmp-play)'
echo
echo '```'
cat "$TMP/bench.txt"
echo '```'
echo
echo '### Server processes'
echo
awk -v n="$N" -v p0="$P0" -v p1="$P1" -v b0="$B0" -v b1="$B1" -v u0="$U0" -v u1="$U1" \
    -v l0="$L0" -v l1="$L1" -v c0="$C0" -v c1="$C1" -v f0="$F0" -v f1="$F1" -v clk="$CLK" -v el="$EL" \
    -v lpss="$LPSS" -v lrss="$LRSS" '
    { s += $2; r += $3; d += $4; if ($2 > smax) smax = $2; if (smin == "" || $2 < smin) smin = $2 }
    END {
        ms = 1000 / clk
        pcpu = (p1 - p0) * ms / el          # ms of CPU per second, all players
        print "| metric | value |"
        print "|---|---|"
        printf "| RTMP play processes sampled | %d |\n", n
        printf "| PSS per viewer process, avg / min / max | %.0f / %d / %d KiB |\n", s / n, smin, smax
        printf "| RSS per viewer process, avg | %.0f KiB |\n", r / n
        printf "| Private_Dirty per viewer process, avg | %.0f KiB |\n", d / n
        printf "| PSS of all viewer processes | %.1f MiB |\n", s / 1024
        printf "| CPU per viewer | %.2f ms/s (%.3f%% of a core) |\n", pcpu / n, pcpu / n / 10
        printf "| CPU of all viewers | %.1f%% of one core |\n", pcpu / 10
        printf "| buffer process CPU | %.2f%% of one core |\n", (b1 - b0) * ms / el / 10
        printf "| RTMP publish process CPU | %.2f%% of one core |\n", (u1 - u0) * ms / el / 10
        printf "| sluice-RTMP listener CPU / PSS / RSS | %.2f%% / %s / %s KiB |\n", (l1 - l0) * ms / el / 10, lpss, lrss
        printf "| sluice-bench client CPU (all players) | %.1f%% of one core |\n", (c1 - c0) * ms / el / 10
        printf "| ffmpeg publisher CPU | %.1f%% of one core |\n", (f1 - f0) * ms / el / 10
        printf "| clock ticks / s | %d |\n", clk
    }' "$MEM"
echo
if [ -s "$TMP/smaps-top.txt" ]; then
    echo "### Largest private mappings of one viewer process (pid $ONE), KiB"
    echo
    echo '```'
    echo "Priv_Dirty Priv_Clean Pss  mapping"
    cat "$TMP/smaps-top.txt"
    echo '```'
fi
echo
echo "Listener heap (inherited by every viewer): $LHEAP"
echo
echo "### Server log (last 15 lines, $(wc -l < "$TMP/sluice.log") total)"
echo '```'
tail -15 "$TMP/sluice.log"
echo '```'
