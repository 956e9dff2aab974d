#!/usr/bin/env bash
# strongroom web console: runs the real-browser test (test_console.py) against
# $STRONGROOM_BIN (or the first argument), in headless Debian Chromium.
# Installs chromium/chromium-driver with apt-get when missing (as root) and
# selenium into target/console-venv when it is not importable. Exits non-zero
# on failure. Extra env: SCREENSHOT_DIR, CONSOLE_URL+CONSOLE_KEY.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
export STRONGROOM_BIN="${1:-${STRONGROOM_BIN:-}}"
if [ -z "$STRONGROOM_BIN" ] && [ -z "${CONSOLE_URL:-}" ]; then
  echo "usage: $0 PATH/TO/strongroom   (or set STRONGROOM_BIN)" >&2
  exit 2
fi
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  else
    echo "needs /usr/bin/chromium and /usr/bin/chromedriver: apt-get install chromium chromium-driver" >&2
    exit 2
  fi
fi
py=python3
if ! python3 -c 'import selenium' 2>/dev/null; then
  venv="$repo/target/console-venv"
  if ! "$venv/bin/python" -c 'import selenium' 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q 'selenium>=4.11,<5'
  fi
  py="$venv/bin/python"
fi
exec timeout 300 "$py" "$here/test_console.py"
