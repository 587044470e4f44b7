#!/usr/bin/env bash
# Installs Debian's headless-capable Chromium and its chromedriver for the web end-to-end test.
#
#   scripts/install-browser.sh     installs chromium + chromium-driver with apt-get, if missing
#
# Needs root (apt-get). No browser is downloaded from anywhere but Debian's package archive.
# Safe to run again: does nothing when /usr/bin/chromium and /usr/bin/chromedriver exist.
set -euo pipefail

if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-browser: apt-get not found; install Chromium and chromedriver by hand" >&2
  exit 1
fi
sudo=()
if [ "$(id -u)" != 0 ]; then
  sudo=(sudo)
fi
echo "install-browser: installing chromium and chromium-driver with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends chromium chromium-driver fonts-dejavu-core >/dev/null
/usr/bin/chromium --version >&2
