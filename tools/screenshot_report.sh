#!/usr/bin/env bash
# Render every paper table and plot as one standalone HTML page and take a screenshot of it with headless Chromium
# (Debian's `chromium` package: apt-get install chromium), to look at the page as a reader would.
#
#   bash tools/screenshot_report.sh [RUNS_DIR=runs/demo] [OUT_DIR=runs/report_html]
#
# Writes OUT_DIR/index.html (+ tableNN.html, plots/) and OUT_DIR/index.png. The page loads nothing from the network.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-runs/demo}
out=${2:-runs/report_html}
bin=${RMBENCH:-.venv/bin/rmbench}
browser=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$browser" ]; then
  echo "screenshot_report.sh: no chromium on PATH; install Debian's package: apt-get install chromium" >&2
  exit 2
fi
"$bin" report --all --format html --plots --runs "$runs" --out "$out"
"$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1400,4000 \
  --screenshot="$out/index.png" "file://$(realpath "$out/index.html")" 2>/dev/null
echo "wrote $out/index.png"
