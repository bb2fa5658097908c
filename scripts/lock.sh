#!/usr/bin/env bash
# Refresh requirements.lock: the exact environment CI and both README commands install.
# Resolves pyproject.toml's ranges (with the dev extra) to today's newest versions for CPython 3.11
# on Linux x86-64, with PyTorch's CPU build (a local wheel here, or PyTorch's CPU index elsewhere),
# so the lock never pulls the multi-GB CUDA build. Run it, then the tests, then commit both.
#   scripts/lock.sh [extra uv args, e.g. --upgrade-package optuna]
set -euo pipefail
cd "$(dirname "$0")/.."
command -v uv >/dev/null || { echo "lock.sh: needs uv (pip install uv; it is in the dev extra)" >&2; exit 2; }
torch_pin=$(grep -E '^torch==' requirements.lock 2>/dev/null || echo 'torch==2.13.0+cpu')
overrides=$(mktemp); trap 'rm -f "$overrides" "$overrides.err"' EXIT
echo "$torch_pin" >"$overrides"
find_links=()
[ -d /opt/wheels ] && find_links=(--find-links /opt/wheels)   # this machine's CPU wheel
uv pip compile pyproject.toml --extra dev --override "$overrides" "${find_links[@]}" \
  --extra-index-url https://download.pytorch.org/whl/cpu --index-strategy unsafe-best-match \
  --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
  --no-header --no-annotate --quiet -o requirements.lock.new "$@" 2>"$overrides.err" || {
  echo "lock.sh: PyTorch's CPU index not reachable; resolving without it ($(tail -1 "$overrides.err"))" >&2
  uv pip compile pyproject.toml --extra dev --override "$overrides" "${find_links[@]}" \
    --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
    --no-header --no-annotate --quiet -o requirements.lock.new "$@"; }
{ echo "# The environment the tests passed with (CPython 3.11, Linux x86-64). Refresh: scripts/lock.sh"
  echo "# torch is PyTorch's CPU build: pip finds it in a local wheel folder or, elsewhere, with"
  echo "#   pip install --extra-index-url https://download.pytorch.org/whl/cpu -r requirements.lock"
  cat requirements.lock.new; } >requirements.lock
rm requirements.lock.new
echo "requirements.lock: $(grep -c '==' requirements.lock) pins"
