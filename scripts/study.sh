#!/usr/bin/env bash
# The main job: set up (or reuse) the environment, then run the workbench study on the default
# packaged model. Extra arguments go to `workbench study` (try --help).
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$repo_root/scripts/setup-env.sh"
venv="${WORKBENCH_VENV:-$repo_root/.venv}"
cd "$repo_root"
exec "$venv/bin/workbench" study "$@"
