#!/usr/bin/env bash
# Install, only where missing, the Debian packages the end-to-end tests need:
# ffmpeg/ffprobe, curl, openssl (test certificates), GStreamer (tools, good/bad/libav plugins, Python bindings), rtmpdump,
# yt-dlp (the HDS client), Chromium (hls.js, dash.js, mpegts.js and native playback), nginx
# (an HTTP cache in front of Sluice; its own service is kept from starting).
# A machine that already has them does nothing (no apt-get update, no root needed).
set -euo pipefail

PKGS=(ffmpeg curl openssl python3-prometheus-client libnginx-mod-rtmp python3-gi python3-gst-1.0 gir1.2-gst-rtsp-server-1.0 gstreamer1.0-rtsp gstreamer1.0-tools gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
      gstreamer1.0-libav rtmpdump yt-dlp chromium nginx)

missing=()
for p in "${PKGS[@]}"; do
    # dpkg-query, not `dpkg -s | grep -q` (SIGPIPE + pipefail makes that pipeline fail)
    status="$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)"
    [[ "$status" == "install ok installed" ]] || missing+=("$p")
done
for c in ffmpeg ffprobe curl openssl gst-launch-1.0 rtmpdump yt-dlp chromium nginx; do
    if ! command -v "$c" >/dev/null 2>&1; then
        # a command is gone though its package claims to be installed: reinstall the set
        [[ ${#missing[@]} -gt 0 ]] || missing=("${PKGS[@]}")
    fi
done
if [[ ${#missing[@]} -eq 0 ]]; then
    echo "install-test-deps: all test dependencies present"
    exit 0
fi

if [[ $(id -u) -eq 0 ]]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo -n)
else
    echo "install-test-deps: ERROR: missing packages (${missing[*]}) and not root, no sudo" >&2
    exit 1
fi

echo "install-test-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# Keep packages' own services (nginx on port 80) from starting: not ours to run or stop.
if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee /usr/sbin/policy-rc.d > /dev/null
    "${SUDO[@]}" chmod +x /usr/sbin/policy-rc.d
    trap '"${SUDO[@]}" rm -f /usr/sbin/policy-rc.d' EXIT
fi
# apt-get update once if the package lists are empty or the install fails for lack of them
if ! compgen -G "/var/lib/apt/lists/*_Packages*" >/dev/null; then
    "${SUDO[@]}" apt-get update -o DPkg::Lock::Timeout=600
    updated=1
fi
if ! "${SUDO[@]}" apt-get install -y -o DPkg::Lock::Timeout=600 --no-install-recommends "${missing[@]}"; then
    [[ -n "${updated:-}" ]] && exit 1
    "${SUDO[@]}" apt-get update -o DPkg::Lock::Timeout=600
    "${SUDO[@]}" apt-get install -y -o DPkg::Lock::Timeout=600 --no-install-recommends "${missing[@]}"
fi

for c in ffmpeg ffprobe curl openssl gst-launch-1.0 rtmpdump yt-dlp chromium nginx; do
    command -v "$c" >/dev/null 2>&1 || { echo "install-test-deps: ERROR: $c still missing" >&2; exit 1; }
done
/usr/bin/python3 -c 'import gi; gi.require_version("Gst", "1.0"); from gi.repository import Gst' \
    || { echo "install-test-deps: ERROR: python3 GStreamer bindings unusable" >&2; exit 1; }
echo "install-test-deps: done"
