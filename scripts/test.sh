#!/usr/bin/env bash
# The test suite: set up (or reuse) the environment, lint, then run pytest. Extra arguments go to
# pytest (e.g. `-m unit` for the fast tier alone; the tiers are listed in the README).
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$repo_root/scripts/setup-env.sh"
venv="${WORKBENCH_VENV:-$repo_root/.venv}"
cd "$repo_root"
# Notebooks run on small settings in the test suite (a tiny model); WORKBENCH_SMALL=0 runs them in full.
export WORKBENCH_SMALL="${WORKBENCH_SMALL:-1}"
# llama.cpp itself, for the integration test that loads the workbench's GGUF control vectors in it
# (built once and cached; skipped when only other tiers are asked for with -m)
markers="$(printf '%s\n' "$@" | sed -n '/^-m$/{n;p}')"
if [ -z "${WORKBENCH_LLAMA_CPP:-}" ] && { [ -z "$markers" ] || [[ "$markers" == *integration* ]]; }; then
  if llama_cpp="$(bash "$repo_root/scripts/build-llama-cpp.sh")"; then
    export WORKBENCH_LLAMA_CPP="$llama_cpp"
  fi
fi
"$venv/bin/ruff" check .
"$venv/bin/mypy"  # the package's type check (settings in pyproject.toml)
exec "$venv/bin/python" -m pytest "$@"
