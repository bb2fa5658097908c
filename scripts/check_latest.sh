#!/usr/bin/env bash
# Drift check: install memscale from pyproject.toml's ranges at today's newest versions (not the
# lock) into a throwaway venv, run the fast half of the suite, and list what differs from
# requirements.lock. CI installs from the lock; this shows a break before users hit it.
#   scripts/check_latest.sh [pytest args]      (exit status: the tests')
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$(mktemp -d /tmp/memscale-latest.XXXXXX)
trap 'rm -rf "$venv"' EXIT
python3 -m venv "$venv"
. "$venv/bin/activate"
pip install -q --upgrade pip
# torch stays the locked CPU build (a constraint, so no upgrade moves it): the newest bare `torch`
# is a multi-GB CUDA build. To test a newer torch, install its CPU build first and drop the -c.
grep -E '^torch==' requirements.lock >"$venv/torch.txt"
pip install -q --upgrade --upgrade-strategy eager -c "$venv/torch.txt" -e '.[dev]'
echo "== packages that differ from requirements.lock (lock -> newest)"
python - <<'PY'
import re
from importlib.metadata import distributions
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
lock = {}
for line in open("requirements.lock"):
    line = line.split("#")[0].strip()
    if "==" in line:
        name, ver = line.split("==", 1)
        lock[norm(name)] = ver.split(";")[0].strip()
now = {norm(d.metadata["Name"]): d.version for d in distributions()}
diff = [(n, lock.get(n, "-"), now.get(n, "-")) for n in sorted(set(lock) | set(now))
        if lock.get(n) != now.get(n) and n not in ("memscale", "pip")]
for n, a, b in diff:
    print(f"  {n}: {a} -> {b}")
print(f"  {len(diff)} package(s) differ" if diff else "  none: the lock is today's newest")
PY
echo "== fast tests on the newest versions"
python -m pytest -q -m "not slow" -p no:cacheprovider "$@"
