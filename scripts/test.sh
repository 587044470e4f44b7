#!/usr/bin/env bash
# Installs what the tests need (into .venv) and runs the whole suite: lint, types, tests.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
"$root/scripts/install.sh" --test
"$root/scripts/install-browser.sh"   # Debian's Chromium for the web end-to-end test
# Debian's redis-server for the shared-cache tests (they start and stop their own on 127.0.0.1).
if ! command -v redis-server >/dev/null 2>&1; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "test.sh: redis-server is missing and apt-get is not here; install Redis by hand" >&2
    exit 1
  fi
  sudo=(); [ "$(id -u)" != 0 ] && sudo=(sudo)
  echo "test.sh: installing redis-server with apt-get" >&2
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends redis-server >/dev/null
fi
# Debian's epubcheck (the W3C's EPUB validator, with a Java runtime) checks the books we export.
if [ ! -f /usr/share/java/epubcheck.jar ] || ! command -v java >/dev/null 2>&1; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "test.sh: epubcheck is missing and apt-get is not here; install epubcheck by hand" >&2
    exit 1
  fi
  sudo=(); [ "$(id -u)" != 0 ] && sudo=(sudo)
  echo "test.sh: installing epubcheck with apt-get" >&2
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends epubcheck default-jre-headless >/dev/null
fi
venv=${STORYENGINE_VENV:-$root/.venv}
"$venv/bin/ruff" check src tests
"$venv/bin/mypy"
"$venv/bin/pytest" -q "$@"
