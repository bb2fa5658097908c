#!/usr/bin/env bash
# Regenerate FINDINGS.md: run the six quick claim studies, report each, and rebuild FINDINGS.md's
# tables, verdicts and figures from their results (analysis/findings.py). Every number in
# FINDINGS.md comes from this run.
#   scripts/reproduce_findings.sh [RESULTS_ROOT]      (default: results)
# A study that already finished is not rerun (`study run` continues a study and skips every trial
# that has a row); delete its folder to measure it afresh. About an hour on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
root="${1:-results}"
studies="memory_per_compute cost_vs_seq_len truncation short_vs_long multi_state text_context"
for s in $studies; do
    echo "== ${s}_quick  (load $(cut -d' ' -f1-3 /proc/loadavg))"
    study run "search_spaces/${s}_quick.yaml" --results "$root"
done
for s in $studies; do
    study report "$root/${s}_quick"
done
python -m analysis.findings --results "$root" --out FINDINGS.md --figures docs/findings
