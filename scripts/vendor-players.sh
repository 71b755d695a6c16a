#!/usr/bin/env bash
# Refreshes the browser players Sluice serves itself (/hlsjs.js, /dashjs.js, /dashjs-mss.js,
# /mpegts.js) from the npm registry, with their licences, into connectors/player/vendor/.
# The versions are pinned here and in connectors/src/player.rs; change both together.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$ROOT/connectors/player/vendor"
HLS=1.7.4 DASH=5.2.1 MPEGTS=1.8.2
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
npm pack --silent "hls.js@$HLS" "dashjs@$DASH" "mpegts.js@$MPEGTS" > /dev/null
for f in *.tgz; do mkdir -p "${f%.tgz}"; tar xzf "$f" -C "${f%.tgz}"; done
mkdir -p "$OUT"
cp "hls.js-$HLS/package/dist/hls.min.js" "$OUT/hls.min.js"
cp "hls.js-$HLS/package/LICENSE" "$OUT/LICENSE.hls.js"
cp "dashjs-$DASH/package/dist/modern/umd/dash.all.min.js" "$OUT/dash.all.min.js"
cp "dashjs-$DASH/package/dist/modern/umd/dash.mss.min.js" "$OUT/dash.mss.min.js"
cp "dashjs-$DASH/package/LICENSE.md" "$OUT/LICENSE.dashjs.md"
cp "mpegts.js-$MPEGTS/package/dist/mpegts.js" "$OUT/mpegts.js"
cp "mpegts.js-$MPEGTS/package/LICENSE" "$OUT/LICENSE.mpegts.js"
echo "vendored hls.js $HLS, dash.js $DASH, mpegts.js $MPEGTS into $OUT"
