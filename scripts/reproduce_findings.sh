#!/usr/bin/env bash
# Regenerate FINDINGS.md: run the six quick claim studies, report each, and rebuild FINDINGS.md's
# tables, verdicts and figures from their results (analysis/findings.py). Every number in
# FINDINGS.md comes from this run.
#   scripts/reproduce_findings.sh [RESULTS_ROOT]      (default: results)
# A study folder that exists is resumed (`study resume` runs only the trials without a row, so a
# finished study is not rerun); delete its folder to measure it afresh. About an hour on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
root="${1:-results}"
studies="memory_per_compute cost_vs_seq_len truncation short_vs_long multi_state text_context"
mkdir -p "$root"
log="$root/reproduce_findings.tsv"       # the machine's load around each run: FINDINGS quotes it
[ -f "$log" ] || printf 'study\tstarted_utc\tload_before\twall_s\tload_after\n' > "$log"
for s in $studies; do
    before=$(cut -d' ' -f1 /proc/loadavg); t0=$(date +%s); started=$(date -u +%FT%TZ)
    echo "== ${s}_quick  (load $before)"
    if [ -e "$root/${s}_quick/spec.yaml" ]; then
        study resume "$root/${s}_quick"      # runs only the trials without a row yet
    else
        study run "search_spaces/${s}_quick.yaml" --results "$root"
    fi
    printf '%s\t%s\t%s\t%s\t%s\n' "${s}_quick" "$started" "$before" "$(( $(date +%s) - t0 ))" \
        "$(cut -d' ' -f1 /proc/loadavg)" >> "$log"
done
for s in $studies; do
    study report "$root/${s}_quick"
done
python -m analysis.findings --results "$root" --out FINDINGS.md --figures docs/findings
