#!/usr/bin/env bash
# Installs what the tests need (into .venv) and runs the whole suite: lint, types, tests.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
"$root/scripts/install.sh" --test
"$root/scripts/install-browser.sh"   # Debian's Chromium for the web end-to-end test
venv=${STORYENGINE_VENV:-$root/.venv}
"$venv/bin/ruff" check src tests
"$venv/bin/mypy"
"$venv/bin/pytest" -q "$@"
