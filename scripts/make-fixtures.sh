#!/usr/bin/env bash
# Deterministic test fixtures from ffmpeg's lavfi sources (never downloaded).
#
#   scripts/make-fixtures.sh OUTDIR           -> OUTDIR/bframes.flv, OUTDIR/nobframes.flv
#   scripts/make-fixtures.sh --demo FILE.flv  -> the small built-in demo (fixtures/demo.flv)
#
# Every fixture: 10 s, 640x360, 25 fps H.264 High, keyframe every 2 s (GOP 50, no scene cut),
# AAC-LC 44.1 kHz stereo two-tone. Facts checked with ffprobe after encoding:
# 250 video packets, 5 keyframes at 0/2/4/6/8 s, 432 AAC packets.
# Idempotent: a file that exists and is newer than this script is only re-verified.
set -euo pipefail

SCRIPT="$(readlink -f "${BASH_SOURCE[0]}")"

die() { echo "make-fixtures: ERROR: $*" >&2; exit 1; }

command -v ffmpeg >/dev/null || die "ffmpeg not found (run scripts/install-test-deps.sh)"
command -v ffprobe >/dev/null || die "ffprobe not found (run scripts/install-test-deps.sh)"

# Two-tone stereo audio: 440 Hz left, 660 Hz right.
AUDIO_SRC="aevalsrc=0.25*sin(2*PI*440*t)|0.25*sin(2*PI*660*t):s=44100:c=stereo:d=10"

# encode OUT NOISE BF [extra x264 options...]
encode() {
    local out="$1" noise="$2" bf="$3"; shift 3
    local tmp="${out%.flv}.tmp.$$.flv"
    ffmpeg -hide_banner -loglevel error -nostdin -y \
        -f lavfi -i "testsrc2=s=640x360:r=25:d=10,noise=alls=${noise}:allf=t,format=yuv420p" \
        -f lavfi -i "$AUDIO_SRC" \
        -map 0:v -map 1:a \
        -c:v libx264 -profile:v high -preset medium -threads 1 \
        -g 50 -keyint_min 50 -sc_threshold 0 -bf "$bf" "$@" \
        -c:a aac -b:a 128k -ar 44100 -ac 2 \
        -t 10 -f flv "$tmp" || { rm -f "$tmp"; die "ffmpeg failed to encode $out"; }
    mv -f "$tmp" "$out"
}

# verify FILE EXPECT_BFRAMES(yes|no|any)
verify() {
    local f="$1" bf="$2"
    local vcount kf kts acount vinfo ainfo
    vinfo="$(ffprobe -v error -select_streams v:0 -show_entries stream=codec_name,profile,width,height,r_frame_rate -of csv=p=0 "$f")"
    ainfo="$(ffprobe -v error -select_streams a:0 -show_entries stream=codec_name,sample_rate,channels -of csv=p=0 "$f")"
    [[ "$vinfo" == "h264,High,640,360,25/1" ]] || die "$f: video stream is '$vinfo', want 'h264,High,640,360,25/1'"
    [[ "$ainfo" == "aac,44100,2" ]] || die "$f: audio stream is '$ainfo', want 'aac,44100,2'"
    local vpk
    vpk="$(ffprobe -v error -select_streams v:0 -show_entries packet=pts_time,dts_time,flags -of csv=p=0 "$f")"
    vcount="$(grep -c . <<<"$vpk")"
    kf="$(grep -c ',K' <<<"$vpk" || true)"
    # keyframe times rounded to whole seconds (FLV with B-frames starts at pts 0.08)
    kts="$(awk -F, '$3 ~ /K/ {printf "%d ", $1 + 0.25}' <<<"$vpk")"
    acount="$(ffprobe -v error -select_streams a:0 -count_packets -show_entries stream=nb_read_packets -of csv=p=0 "$f")"
    [[ "$vcount" == 250 ]] || die "$f: $vcount video packets, want 250"
    [[ "$kf" == 5 ]] || die "$f: $kf keyframes, want 5"
    [[ "$kts" == "0 2 4 6 8 " ]] || die "$f: keyframes at '$kts' s, want '0 2 4 6 8'"
    [[ "$acount" == 432 ]] || die "$f: $acount audio packets, want 432"
    local reordered
    reordered="$(awk -F, '$1 != $2 {n++} END {print n+0}' <<<"$vpk")"
    case "$bf" in
        yes) (( reordered >= 150 )) || die "$f: only $reordered packets with pts != dts, want B-frames" ;;
        no)  (( reordered == 0 )) || die "$f: $reordered packets with pts != dts, want none" ;;
    esac
    echo "make-fixtures: ok $f ($(stat -c %s "$f") bytes; 250 video / 5 key at 0,2,4,6,8 s / 432 aac; pts!=dts on $reordered)"
}

fresh() { [[ -s "$1" && "$1" -nt "$SCRIPT" ]]; }

if [[ "${1:-}" == "--demo" ]]; then
    out="${2:?usage: $0 --demo OUT.flv}"
    mkdir -p "$(dirname "$out")"
    if ! fresh "$out"; then
        # Lighter noise and a capped rate keep the committed demo well under 1 MB.
        encode "$out" 4 3 -b:v 480k -maxrate 600k -bufsize 1200k -b:a 96k
    fi
    verify "$out" yes
    size="$(stat -c %s "$out")"
    (( size < 2000000 )) || die "$out is $size bytes, want < 2 MB"
    exit 0
fi

outdir="${1:?usage: $0 OUTDIR | --demo OUT.flv}"
mkdir -p "$outdir"
fresh "$outdir/bframes.flv" || encode "$outdir/bframes.flv" 12 3 -b:v 900k -maxrate 1200k -bufsize 2000k
fresh "$outdir/nobframes.flv" || encode "$outdir/nobframes.flv" 12 0 -b:v 900k -maxrate 1200k -bufsize 2000k
verify "$outdir/bframes.flv" yes
verify "$outdir/nobframes.flv" no
