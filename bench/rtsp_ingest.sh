#!/usr/bin/env bash
# CPU and memory of the three ways a stream comes in over RTP or RTMP, side by side in one
# run on the same 10 s fixture (640x360 25 fps H.264 with B-frames + AAC):
#   RTMP publish   ffmpeg -re … -f flv rtmp://…/live/in-rtmp       (process "RTMP publish")
#   RTSP publish   ffmpeg -re … -f rtsp rtsp://…/in-rtsp           (process "RTSP publish")
#   RTSP pull      tests/camera.py serving the file; source rtsp://  (process "RTSP pull")
# Each ingest process's CPU is its exact run time (/proc/PID/schedstat) sampled every 100 ms
# until it exits (the pull: until the camera's file ended); PSS from /proc/PID/smaps_rollup.
# The three streams' buffer processes are sampled the same way (the publisher path past the
# socket: parsing the frames and writing them into the shared pages).
#
#   bench/rtsp_ingest.sh            (needs a release build, target/fixtures, ffmpeg, python3-gst)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${SLUICE_BIN:-$ROOT/target/release/sluice}"
FIX="${SLUICE_FIXTURES:-$ROOT/target/fixtures}/bframes.flv"
DIR="$(mktemp -d /tmp/sluice-rtsp-bench.XXXXXX)"
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
API=$(port); RTMP=$(port); HTTP=$(port); RTSP=$(port); CAM=$(port)
cat > "$DIR/cfg.json" <<EOF
{"config":{"controller":{"interface":"127.0.0.1","port":$API},
 "protocols":[{"connector":"RTMP","port":$RTMP,"interface":"127.0.0.1"},
              {"connector":"HTTP","port":$HTTP,"interface":"127.0.0.1"},
              {"connector":"RTSP","port":$RTSP,"interface":"127.0.0.1"}]},
 "streams":{"in-rtmp":{"name":"in-rtmp","source":"push://"},
            "in-rtsp":{"name":"in-rtsp","source":"push://"},
            "in-pull":{"name":"in-pull","source":"rtsp://127.0.0.1:$CAM/test","always_on":true}}}
EOF
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$DIR"; }
trap cleanup EXIT
/usr/bin/python3 "$ROOT/tests/camera.py" --port "$CAM" --file "$FIX" > "$DIR/cam.out" 2>&1 & pids+=($!)
"$BIN" -c "$DIR/cfg.json" --rundir "$DIR/run" 2> "$DIR/sluice.log" & pids+=($!)
sleep 1.5
ffmpeg -hide_banner -nostdin -loglevel error -re -i "$FIX" -c copy -f flv "rtmp://127.0.0.1:$RTMP/live/in-rtmp" & pids+=($!)
ffmpeg -hide_banner -nostdin -loglevel error -re -i "$FIX" -c copy -f rtsp -rtsp_transport tcp "rtsp://127.0.0.1:$RTSP/in-rtsp" & pids+=($!)
python3 - "$DIR" <<'EOF'
import os, sys, time
names = {"RTMP publish": "RTMP publish", "RTSP publish": "RTSP publish", "RTSP pull": "RTSP pull"}
last = {}
pss = {}
end = time.time() + 14
while time.time() < end:
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            comm = open(f"/proc/{pid}/comm").read().strip()
            if comm == "buffer":
                # Each stream's buffer process: what the publisher path costs past the socket.
                argv = open(f"/proc/{pid}/cmdline").read().split("\0")
                stream = argv[argv.index("--stream") + 1] if "--stream" in argv else "?"
                comm = f"buffer {stream}"
            elif comm not in names:
                continue
            ns = int(open(f"/proc/{pid}/schedstat").read().split()[0])
            last[comm] = ns
            for line in open(f"/proc/{pid}/smaps_rollup"):
                if line.startswith("Pss:"):
                    pss[comm] = max(pss.get(comm, 0), int(line.split()[1]))
        except OSError:
            pass
    time.sleep(0.1)
base = last.get("RTMP publish")
print(f"{'ingest':15} {'CPU ms (10 s of media)':>22} {'× RTMP':>7} {'peak PSS KiB':>13}")
for k in ["RTMP publish", "RTSP publish", "RTSP pull",
          "buffer in-rtmp", "buffer in-rtsp", "buffer in-pull"]:
    if k in last:
        ratio = f"{last[k] / base:.2f}" if base else "-"
        print(f"{k:15} {last[k] / 1e6:22.1f} {ratio:>7} {pss.get(k, 0):13}")
    else:
        print(f"{k:15} (not seen)")
EOF
grep -E "session ended|push ended|publish" "$DIR/sluice.log" | grep -v HTTP || true
