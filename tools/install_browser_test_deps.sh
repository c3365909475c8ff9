#!/usr/bin/env bash
# Headless Chromium and its WebDriver for the ROI drawer's browser test
# (tests/test_roi_drawer.py). Idempotent: a quick no-op when both are present.
# Installs with apt-get only when run as root on Debian/Ubuntu; otherwise says what to do
# and exits 1 (the test then skips with that reason).
set -euo pipefail

have() { command -v "$1" >/dev/null 2>&1; }
find_browser() { for b in chromium chromium-browser; do have "$b" && return 0; done; return 1; }
find_driver() { have chromedriver || [[ -x /usr/bin/chromedriver ]]; }

if find_browser && find_driver; then
  exit 0
fi
if [[ $(id -u) != 0 ]] || ! have apt-get; then
  echo "[browser-deps] Chromium and chromedriver are missing and this is not root on" \
       "Debian/Ubuntu; install them, e.g. 'sudo apt-get install chromium chromium-driver'" >&2
  exit 1
fi
echo "[browser-deps] installing chromium and chromium-driver with apt-get"
export DEBIAN_FRONTEND=noninteractive
# one update, then a plain install; a stale list is retried once after a fresh update
if ! apt-get install -y -q --no-install-recommends chromium chromium-driver >/dev/null 2>&1; then
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends chromium chromium-driver >/dev/null
fi
find_browser && find_driver || { echo "[browser-deps] install finished but chromium/chromedriver not found" >&2; exit 1; }
echo "[browser-deps] $(chromium --version 2>/dev/null || true)"
