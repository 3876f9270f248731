#!/usr/bin/env bash
# Build llama.cpp's `llama-completion` (CPU) for the test that loads the workbench's GGUF control
# vectors in llama.cpp itself. The source is llama.cpp as vendored in the llama-cpp-python sdist
# on PyPI (pinned, sha256-checked); about six minutes on two cores the first time, then cached.
# Prints the binary's path. Needs cmake and a C++ compiler; without them it says so and fails.
#
#   WORKBENCH_LLAMA_CPP_DIR  where the build is kept (default: ~/.cache/steering-workbench/llama.cpp)
set -euo pipefail

version="0.3.36"
sha256="832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${WORKBENCH_VENV:-$repo_root/.venv}"
root="${WORKBENCH_LLAMA_CPP_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/steering-workbench/llama.cpp}"
binary="$root/llama-cpp-python-$version/llama-completion"

if [ -x "$binary" ]; then
  echo "$binary"
  exit 0
fi
for tool in cmake c++; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "build-llama-cpp: $tool is missing; the llama.cpp control-vector test will be skipped" >&2
    exit 1
  fi
done
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
echo "build-llama-cpp: building llama.cpp (llama-cpp-python $version's source) in $root" >&2
"$venv/bin/python" -m pip --disable-pip-version-check -q download --no-deps --no-binary :all: \
  "llama-cpp-python==$version" -d "$scratch" 2> >(grep -v "is ignored" >&2)
archive="$scratch/llama_cpp_python-$version.tar.gz"
echo "$sha256  $archive" | sha256sum -c --quiet -
tar -xzf "$archive" -C "$scratch"
source_dir="$scratch/llama_cpp_python-$version/vendor/llama.cpp"
cmake -S "$source_dir" -B "$scratch/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF \
  -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF \
  -DGGML_OPENMP=OFF -DBUILD_SHARED_LIBS=OFF > "$scratch/configure.log" 2>&1 \
  || { tail -20 "$scratch/configure.log" >&2; exit 1; }
cmake --build "$scratch/build" --target llama-completion -j "$(nproc)" > "$scratch/build.log" 2>&1 \
  || { tail -20 "$scratch/build.log" >&2; exit 1; }
mkdir -p "$(dirname "$binary")"
cp "$scratch/build/bin/llama-completion" "$binary.partial"
mv "$binary.partial" "$binary"
echo "$binary"
