#!/usr/bin/env bash
# Prints the path of a portable llama-cpp-python wheel, building it once if needed.
#
# The default native build of llama.cpp segfaults on CPUs with AMX, and pip's wheel
# cache does not key on CMAKE_ARGS. So the wheel is built with fixed, portable flags
# into a directory whose name is derived from the version and the flags, and later
# setups install that file instead of compiling again (~5 minutes on 2 cores).
set -euo pipefail

LLAMA_CPP_VERSION=${LLAMA_CPP_VERSION:-0.3.36}
LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
PYTHON=${PYTHON:-python3}

py_tag=$("$PYTHON" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
flags_hash=$(printf '%s|%s|%s' "$LLAMA_CPP_VERSION" "$LLAMA_CMAKE_ARGS" "$py_tag" | sha256sum | cut -c1-12)
cache_root=${STORYENGINE_WHEELHOUSE:-${XDG_CACHE_HOME:-$HOME/.cache}/storyengine/wheels}
wheel_dir="$cache_root/llama-cpp-python-$LLAMA_CPP_VERSION-$py_tag-$flags_hash"

existing=$(ls "$wheel_dir"/llama_cpp_python-*.whl 2>/dev/null | head -n 1 || true)
if [ -z "$existing" ]; then
  echo "storyengine: building llama-cpp-python $LLAMA_CPP_VERSION once, portable CPU flags (about 5 minutes)..." >&2
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  CMAKE_ARGS="$LLAMA_CMAKE_ARGS" CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) \
    "$PYTHON" -m pip wheel --quiet --no-deps --no-cache-dir --no-binary llama-cpp-python \
    -w "$tmp" "llama-cpp-python==$LLAMA_CPP_VERSION" >&2
  mkdir -p "$wheel_dir"
  # Move into place only once complete, so an interrupted build is never picked up.
  mv "$tmp"/llama_cpp_python-*.whl "$wheel_dir"/
  existing=$(ls "$wheel_dir"/llama_cpp_python-*.whl | head -n 1)
fi
echo "$existing"
