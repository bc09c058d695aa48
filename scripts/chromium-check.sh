#!/usr/bin/env bash
# Loads a local HTML page in headless Chromium (Debian package `chromium`, see ci-setup.sh) and
# writes what a test needs to judge it:
#   OUT/dom.html        the DOM after loading (--dump-dom)
#   OUT/console.log     every console message the page produced (errors, warnings, logs)
#   OUT/screenshot.png  a screenshot (WINDOW=WIDTH,HEIGHT, default 1400,4000; also the DOM's window)
#   OUT/chromium.log    Chromium's own log
# Usage: scripts/chromium-check.sh PAGE.html OUT_DIR    Exit 2: Chromium is not installed.
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 PAGE.html OUT_DIR" >&2; exit 64; }
page=$1
out=$2
browser=${CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}
[ -n "$browser" ] || { echo "chromium not found: run scripts/ci-setup.sh (Debian package chromium)" >&2; exit 2; }
mkdir -p "$out"
# A fresh profile per run: parallel tests must not share Chromium's profile lock.
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
url="file://$(realpath "$page")"
flags=(--headless --no-sandbox --disable-gpu --disable-dev-shm-usage --no-first-run
       --hide-scrollbars --user-data-dir="$profile")
# Console messages appear in Chromium's log as "...:CONSOLE(line)] "message", source: ..." (or
# ":CONSOLE:line]" in newer builds) when logging to stderr at verbosity 0.
timeout 120 "$browser" "${flags[@]}" --window-size="${WINDOW:-1400,4000}" --enable-logging=stderr --v=0 --dump-dom "$url" \
  > "$out/dom.html" 2> "$out/chromium.log"
grep -E ':CONSOLE[:(]' "$out/chromium.log" > "$out/console.log" || true
timeout 120 "$browser" "${flags[@]}" --window-size="${WINDOW:-1400,4000}" \
  --screenshot="$out/screenshot.png" "$url" > /dev/null 2>> "$out/chromium.log"
[ -s "$out/screenshot.png" ] || { echo "no screenshot written; see $out/chromium.log" >&2; exit 1; }
echo "dom $(wc -c < "$out/dom.html") bytes, $(wc -l < "$out/console.log") console message(s), screenshot $out/screenshot.png"
