#!/usr/bin/env bash
# Installs what the tests need (into .venv) and runs the whole suite: lint, types, tests.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
"$root/scripts/install.sh" --test
"$root/scripts/install-browser.sh"   # Debian's Chromium for the web end-to-end test
# Debian packages the tests use (they start and stop their own servers on 127.0.0.1).
apt_install() {  # apt_install WHAT PACKAGE...: install with apt-get, or say what is missing
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "test.sh: $1 is missing and apt-get is not here; install it by hand" >&2
    exit 1
  fi
  local sudo=(); [ "$(id -u)" != 0 ] && sudo=(sudo)
  echo "test.sh: installing $1 with apt-get" >&2
  shift
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
# redis-server for the shared-cache tests
command -v redis-server >/dev/null 2>&1 || apt_install redis-server redis-server
# epubcheck (the W3C's EPUB validator, and a Java runtime) checks the books we export
if [ ! -f /usr/share/java/epubcheck.jar ] || ! command -v java >/dev/null 2>&1; then
  apt_install epubcheck epubcheck default-jre-headless
fi
venv=${STORYENGINE_VENV:-$root/.venv}
"$venv/bin/ruff" check src tests
"$venv/bin/mypy"
"$venv/bin/pytest" -q "$@"
