#!/usr/bin/env bash
# Deterministic test fixtures from ffmpeg's lavfi sources (never downloaded).
#
#   scripts/make-fixtures.sh OUTDIR           -> OUTDIR/bframes.flv, OUTDIR/nobframes.flv,
#                                                OUTDIR/hevc.ts, OUTDIR/multi.ts
#   scripts/make-fixtures.sh --demo FILE.flv  -> the small built-in demo (fixtures/demo.flv)
#   scripts/make-fixtures.sh --long FILE.flv SECONDS -> bframes.flv's content, SECONDS long at
#                                                4 Mbit/s (the converter benchmark's input)
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
DUR=10
audio_src() { echo "aevalsrc=0.25*sin(2*PI*440*t)|0.25*sin(2*PI*660*t):s=44100:c=stereo:d=$DUR"; }

# encode OUT NOISE BF [extra x264 options...]
encode() {
    local out="$1" noise="$2" bf="$3"; shift 3
    local tmp="${out%.flv}.tmp.$$.flv"
    ffmpeg -hide_banner -loglevel error -nostdin -y \
        -f lavfi -i "testsrc2=s=640x360:r=25:d=$DUR,noise=alls=${noise}:allf=t,format=yuv420p" \
        -f lavfi -i "$(audio_src)" \
        -map 0:v -map 1:a \
        -c:v libx264 -profile:v high -preset medium -threads 1 \
        -g 50 -keyint_min 50 -sc_threshold 0 -bf "$bf" "$@" \
        -c:a aac -b:a 128k -ar 44100 -ac 2 \
        -t "$DUR" -f flv "$tmp" || { rm -f "$tmp"; die "ffmpeg failed to encode $out"; }
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

# hevc.ts: the same picture and sound in MPEG-TS, video HEVC Main (x265, closed GOP of 50).
encode_hevc() {
    local out="$1" tmp="${1%.ts}.tmp.$$.ts"
    ffmpeg -hide_banner -loglevel error -nostdin -y \
        -f lavfi -i "testsrc2=s=640x360:r=25:d=10,noise=alls=12:allf=t,format=yuv420p" \
        -f lavfi -i "$(audio_src)" -map 0:v -map 1:a \
        -c:v libx265 -preset fast -b:v 700k \
        -x265-params "log-level=error:pools=1:frame-threads=1:keyint=50:min-keyint=50:scenecut=0:open-gop=0:bframes=3" \
        -c:a aac -b:a 128k -ar 44100 -ac 2 -t 10 -f mpegts "$tmp" || { rm -f "$tmp"; die "ffmpeg failed to encode $out"; }
    mv -f "$tmp" "$out"
}

# multi.ts: two H.264 renditions (640x360 and 320x180, the same GOP) and two AAC tracks
# (English 440 Hz stereo 44.1 kHz, Swedish 660 Hz mono 48 kHz), languages in the PMT.
encode_multi() {
    local out="$1" tmp="${1%.ts}.tmp.$$.ts"
    ffmpeg -hide_banner -loglevel error -nostdin -y \
        -f lavfi -i "testsrc2=s=640x360:r=25:d=10,noise=alls=12:allf=t,format=yuv420p" \
        -f lavfi -i "sine=f=440:r=44100:d=10" -f lavfi -i "sine=f=660:r=48000:d=10" \
        -filter_complex "[0:v]split[a][b];[b]scale=320:180[s]" \
        -map "[a]" -map "[s]" -map 1:a -map 2:a \
        -c:v libx264 -profile:v high -preset fast -threads 1 -g 50 -keyint_min 50 -sc_threshold 0 -bf 2 \
        -b:v:0 800k -b:v:1 250k \
        -c:a aac -b:a 96k -ac:a:0 2 -ac:a:1 1 \
        -metadata:s:a:0 language=eng -metadata:s:a:1 language=swe \
        -t 10 -f mpegts "$tmp" || { rm -f "$tmp"; die "ffmpeg failed to encode $out"; }
    mv -f "$tmp" "$out"
}

# count FILE SELECTOR -> packets of that stream
count() { ffprobe -v error -select_streams "$2" -count_packets -show_entries stream=nb_read_packets -of csv=p=0 "$1" | grep . | head -1; }

verify_ts() {
    local f="$1" want="$2" got
    got="$(ffprobe -v error -show_entries stream=codec_name,width,height,sample_rate,channels:stream_tags=language -of csv=p=0 "$f" | awk -v RS= 'END { print }' | tr '\n' ' ')"
    [[ "$got" == "$want" ]] || die "$f: streams '$got', want '$want'"
    local v a
    v="$(count "$f" v:0)"; a="$(count "$f" a:0)"
    [[ "$v" == 250 ]] || die "$f: $v video packets, want 250"
    [[ "$a" == 432 ]] || die "$f: $a audio packets, want 432"
    echo "make-fixtures: ok $f ($(stat -c %s "$f") bytes; $got; 250 video / 432 audio)"
}

if [[ "${1:-}" == "--long" ]]; then
    # The converter benchmark's input: the B-frame fixture's picture and sound, SECONDS long,
    # at 4 Mbit/s (so about 200 MB for 400 s). Only its size and duration are checked.
    out="${2:?usage: $0 --long OUT.flv SECONDS}"
    DUR="${3:?usage: $0 --long OUT.flv SECONDS}"
    mkdir -p "$(dirname "$out")"
    fresh "$out" || encode "$out" 12 3 -b:v 4000k -maxrate 5000k -bufsize 8000k
    frames="$(ffprobe -v error -select_streams v:0 -count_packets -show_entries stream=nb_read_packets -of csv=p=0 "$out")"
    [[ "$frames" == "$((DUR * 25))" ]] || die "$out: $frames video packets, want $((DUR * 25))"
    echo "make-fixtures: ok $out ($(stat -c %s "$out") bytes; $frames video packets)"
    exit 0
fi

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
fresh "$outdir/hevc.ts" || encode_hevc "$outdir/hevc.ts"
fresh "$outdir/multi.ts" || encode_multi "$outdir/multi.ts"
verify_ts "$outdir/hevc.ts" "hevc,640,360 aac,44100,2 "
verify_ts "$outdir/multi.ts" "h264,640,360 h264,320,180 aac,44100,2,eng aac,48000,1,swe "
