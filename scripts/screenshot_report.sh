#!/usr/bin/env bash
# Screenshot an HTML report with headless Chromium: scripts/screenshot_report.sh REPORT.html OUT.png
# The window is 1280 x 2400 (override with SCREENSHOT_SIZE=W,H). Installs chromium when it is
# missing and we are root. Networking is off as far as Chromium allows: a report is self-contained.
set -euo pipefail

if [ "$#" -ne 2 ]; then
    echo "usage: $0 REPORT.html OUT.png" >&2
    exit 2
fi
report=$(realpath "$1")
out=$(realpath -m "$2")
[ -f "$report" ] || { echo "$1: no such report" >&2; exit 2; }

browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
if [ -z "$browser" ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "chromium is not installed; install it (apt-get install chromium) and retry" >&2
        exit 2
    fi
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null
    browser=$(command -v chromium)
fi

profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
mkdir -p "$(dirname "$out")"
"$browser" --headless --no-sandbox --disable-gpu --disable-background-networking \
    --disable-component-update --disable-sync --no-first-run --user-data-dir="$profile" \
    --hide-scrollbars --window-size="${SCREENSHOT_SIZE:-1280,2400}" --screenshot="$out" \
    "file://$report" 2>/dev/null
[ -s "$out" ] || { echo "chromium wrote no screenshot to $out" >&2; exit 1; }
echo "$out"
