#!/bin/sh
# Regenerates noble.js from the npm packages (pinned versions), with esbuild.
#   sh crates/server/ui/vendor/build.sh [SCRATCH_DIR]   (default /tmp/noblebuild)
set -eu
VENDOR=$(cd "$(dirname "$0")" && pwd)
SCRATCH=${1:-/tmp/noblebuild}
CURVES=2.4.0 HASHES=2.4.0 ESBUILD=0.28.2
mkdir -p "$SCRATCH"
cd "$SCRATCH"
[ -f package.json ] || npm init -y >/dev/null
npm install --no-audit --no-fund --save-exact \
  "@noble/curves@$CURVES" "@noble/hashes@$HASHES" "esbuild@$ESBUILD" >/dev/null
cp "$VENDOR/entry.js" entry.js
BANNER="// @noble/curves $CURVES, @noble/hashes $HASHES
// (c) Paul Miller (paulmillr.com), MIT License: https://github.com/paulmillr/noble-curves,
// noble-hashes. Bundled and minified with esbuild $ESBUILD from
// crates/server/ui/vendor/entry.js; do not edit. Regenerate with:
//   sh crates/server/ui/vendor/build.sh"
./node_modules/.bin/esbuild entry.js --bundle --format=esm --minify --target=es2022 \
  --legal-comments=eof --banner:js="$BANNER" --outfile="$VENDOR/noble.js" --log-level=warning
echo "wrote $VENDOR/noble.js"
