#!/usr/bin/env bash
# The headless browser for the chat-page test (tests/test_chat_page.py): Debian's chromium, driven by
# the Python playwright package (in the dev extra). Playwright's own browser download needs internet
# access this project does not have, so the test launches /usr/bin/chromium instead.
# Run as root (apt); safe to re-run. Usage: scripts/install-browser.sh [VENV]   (default .venv)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${1:-.venv}"

if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "chromium is missing and this is not root: run 'sudo $0' (or apt-get install -y chromium)" >&2
    exit 1
  fi
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core
fi
if [ -x "$VENV/bin/pip" ]; then
  "$VENV/bin/pip" install -q -c constraints.txt 'playwright>=1.50'
fi
chromium --version
