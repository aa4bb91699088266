#!/usr/bin/env bash
# On-policy rejected answers vs the option-based pairs (issue 34), on the demo's science donor:
# both built from the demo base with the same sDPO steps and seed, scored on the same first 150
# ARC-Easy questions (0-shot, lm-eval through the harness), then paired with `harness compare`.
# Run from the repository root: bash results/onpolicy/run.sh  (about 12 minutes on 2 cores)
set -euo pipefail
out=${OUT:-/tmp/onpolicy}
db=$out/leaderboard.duckdb
rm -rf "$out" && mkdir -p "$out"
export HF_HUB_OFFLINE=1
harness=${HARNESS:-.venv/bin/harness}
$harness eval demo:smollm2-135m-instruct --suite arc_easy --limit 150 --db "$db" --name base
for recipe in science-options science-on-policy; do
  /usr/bin/time -f "$recipe: %e s wall, %M KB peak" \
    $harness build "results/onpolicy/$recipe.yaml" --out "$out/$recipe" --suite arc_easy --limit 150 --db "$db"
done
$harness leaderboard --db "$db"
